package loopback

import (
	"net"
	"testing"
)

func TestRanges(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Packages {
		pre := Prefix(p)
		if seen[pre] || pre == "127.0.0." {
			t.Fatalf("%s: range %s taken", p, pre)
		}
		seen[pre] = true
	}
	if got := Addr("chunkstore/heal", 7); got != "127.0.2.7" {
		t.Fatalf("Addr = %s", got)
	}
	// The range is usable: the kernel routes all of 127/8 to lo.
	ln, err := net.Listen("tcp", Addr(Packages[len(Packages)-1], 254)+":0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	defer func() {
		if recover() == nil {
			t.Fatal("an unknown package got a range")
		}
	}()
	Prefix("nope")
}

func TestFresh(t *testing.T) {
	seen := map[string]bool{}
	for range 250 {
		pre := Fresh("node")
		if seen[pre] || pre[:8] != "127.220." {
			t.Fatalf("Fresh = %s (seen %v)", pre, seen[pre])
		}
		seen[pre] = true
	}
	if got := Fresh("internal/testcluster"); got[:8] != "127.221." {
		t.Fatalf("Fresh = %s", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a used-up block handed out another /24")
		}
	}()
	Fresh("node")
}
