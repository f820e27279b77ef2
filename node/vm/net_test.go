package vm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/zosproject/zos/node/vm/tap"
)

// A bridged NIC carries traffic: the guest configures eth0 (virtio-net on
// the tap) and pings the host's address on the bridge.
func TestBridgeNICCarriesTraffic(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	m, _ := testManager(t, nil)
	ctx := context.Background()
	br := fmt.Sprintf("ztb%06x", rand.Uint32()&0xffffff)
	t.Cleanup(func() { tap.DeleteBridge(br) })
	bl, err := tap.EnsureBridge(br)
	if err != nil {
		t.Fatal(err)
	}
	sub := 100 + rand.IntN(150)
	hostIP := fmt.Sprintf("10.254.%d.1", sub)
	addr, _ := netlink.ParseAddr(hostIP + "/24")
	if err := netlink.AddrAdd(bl, addr); err != nil {
		t.Fatal(err)
	}
	s := guestSpec(t, "net", "wait", marker(), Media{URL: nbdServer(t, "boot", "net")})
	s.Cmdline += fmt.Sprintf(" zos.ip=10.254.%d.2/24 zos.peer=%s", sub, hostIP)
	s.NICs = []NIC{{Type: "bridge", ID: br}}
	in, err := m.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Delete(in.NICs[0].Tap) })
	con := followConsole(t, m, "net")
	con.waitFor(t, "PING-", 1)
	if want := "PING-OK " + hostIP; !strings.Contains(con.text(), want) {
		t.Fatalf("guest could not reach the host over the bridge:\n%s", con.text())
	}
	if err := m.Destroy(ctx, "net"); err != nil {
		t.Fatal(err)
	}
	if tap.Exists(in.NICs[0].Tap) {
		t.Fatal("tap left after destroy")
	}
}
