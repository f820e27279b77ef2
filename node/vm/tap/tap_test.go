package tap

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

func TestCreateDelete(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CAP_NET_ADMIN) to create bridges and taps")
	}
	br := fmt.Sprintf("ztb%06x", rand.Uint32()&0xffffff)
	name := Name(br, 0)
	t.Cleanup(func() { Delete(name); DeleteBridge(br) })
	if err := Create(name, br); err == nil {
		t.Fatal("Create on a missing bridge succeeded")
	}
	if _, err := EnsureBridge(br); err != nil {
		t.Fatal(err)
	}
	if err := Create(name, br); err != nil {
		t.Fatal(err)
	}
	if m, err := Master(name); err != nil || m != br {
		t.Fatalf("tap master = %q, %v; want %s", m, err, br)
	}
	if err := Create(name, br); err == nil {
		t.Fatal("second Create of the same tap succeeded")
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Fatal("tap still exists after Delete")
	}
	if err := Delete(name); err != nil {
		t.Fatalf("Delete of a missing tap: %v", err)
	}
	if !Exists(br) {
		t.Fatal("bridge went away with its tap")
	}
	if err := Create("this-name-is-far-too-long", br); err == nil {
		t.Fatal("a 25-byte name was accepted")
	}
}
