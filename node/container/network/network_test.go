package network

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
)

func TestIPAM(t *testing.T) {
	_, ipn, _ := net.ParseCIDR("10.9.8.0/29") // 6 usable, one the gateway
	a := &IPAM{Dir: t.TempDir(), Net: ipn, Gateway: net.ParseIP("10.9.8.1")}
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Two allocators over one directory never hand out one address.
			b := &IPAM{Dir: a.Dir, Net: a.Net, Gateway: a.Gateway}
			ip, err := b.Allocate(fmt.Sprint("o", i))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := got[ip.String()]; dup {
				t.Errorf("%s handed out twice (%s, o%d)", ip, prev, i)
			}
			got[ip.String()] = fmt.Sprint("o", i)
		}()
	}
	wg.Wait()
	if len(got) != 5 {
		t.Fatalf("allocated %v, want the 5 free addresses", got)
	}
	if _, ok := got["10.9.8.1"]; ok {
		t.Fatal("gateway handed out")
	}
	if _, err := a.Allocate("x"); err == nil {
		t.Fatal("allocation from a full range")
	}
	var ip, owner string
	for ip, owner = range got {
		break
	}
	a.Release(net.ParseIP(ip), "someone-else")
	if o, _ := a.Owners(); o[ip] != owner {
		t.Fatal("released by a non-owner")
	}
	if err := a.Release(net.ParseIP(ip), owner); err != nil {
		t.Fatal(err)
	}
	again, err := a.Allocate("new")
	if err != nil || again.String() != ip {
		t.Fatalf("reallocate: %v %v", again, err)
	}
}

func TestNATTags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nftables needs root")
	}
	b := make([]byte, 3)
	rand.Read(b)
	n, err := NewNAT("zt" + hex.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Delete() })
	to := net.ParseIP("10.1.2.3")
	for _, tag := range []string{"fwd:a/1", "fwd:a/2", "fwd:b/1"} {
		if err := n.AddForward(tag, Forward{HostPort: 1234, Proto: TCP, To: to, ToPort: 80}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.AddForward("bad", Forward{HostPort: 1, Proto: "sctp", To: to, ToPort: 1}); err == nil {
		t.Fatal("bad protocol accepted")
	}
	_, ipn, _ := net.ParseCIDR("10.1.2.0/24")
	if err := n.Masquerade("ztx", ipn); err != nil {
		t.Fatal(err)
	}
	n.Masquerade("ztx", ipn) // idempotent
	if err := n.DeleteTagged("fwd:a"); err != nil {
		t.Fatal(err)
	}
	tags, _ := n.Tags()
	slices.Sort(tags)
	if want := []string{"bridge:ztx", "fwd:b/1", "fwd:b/1"}; !slices.Equal(tags, want) {
		t.Fatalf("tags %v, want %v", tags, want)
	}
	if err := n.DeleteTaggedExcept("fwd:", map[string]bool{"c": true}); err != nil {
		t.Fatal(err)
	}
	if tags, _ := n.Tags(); !slices.Equal(tags, []string{"bridge:ztx"}) {
		t.Fatalf("after reconcile: %v", tags)
	}
}
