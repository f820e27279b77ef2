package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosproject/zos/node/vm/tap"
)

// What a Create leaves when the agent dies in the middle is cleaned by the
// next Open: a directory without vm.json is removed; a VM recorded but never
// started is listed as stopped and its lease and tap are given back.
func TestOpenAfterCrashDuringCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (taps)")
	}
	dir, err := os.MkdirTemp("", "zvm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Mkdir(filepath.Join(dir, "early"), 0o750)

	br := fmt.Sprintf("ztb%06x", rand.Uint32()&0xffffff)
	tp := tap.Name("late", 0)
	t.Cleanup(func() { tap.Delete(tp); tap.DeleteBridge(br) })
	if _, err := tap.EnsureBridge(br); err != nil {
		t.Fatal(err)
	}
	if err := tap.Create(tp, br); err != nil {
		t.Fatal(err)
	}
	url := "nbd://127.0.0.1:10809/late-boot"
	st := persisted{
		Spec:    Spec{Name: "late", CPU: 1, Memory: 64, Media: []Media{{URL: url}}, NICs: []NIC{{Type: "bridge", ID: br}}},
		Disks:   []disk{{ID: "disk0", Node: "nbd0", URL: url, Type: "disk", Bus: "virtio"}},
		NICs:    []nic{{Type: "bridge", Bridge: br, Tap: tp, HWAddr: macFor("late", 0)}},
		Stopped: true, Exit: "the agent stopped during create",
	}
	b, _ := json.Marshal(st)
	os.Mkdir(filepath.Join(dir, "late"), 0o750)
	if err := os.WriteFile(filepath.Join(dir, "late", "vm.json"), b, 0o640); err != nil {
		t.Fatal(err)
	}
	leases := newFakeLeaser()
	leases.held[url] = "late"
	m, err := Open(Config{Dir: dir, Accel: "tcg", Leaser: leases})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := os.Stat(filepath.Join(dir, "early")); !os.IsNotExist(err) {
		t.Errorf("directory of a create that never saved is still there (%v)", err)
	}
	in, err := m.Info(context.Background(), "late")
	if err != nil || in.State != StateStopped {
		t.Fatalf("info: %+v, %v", in, err)
	}
	if leases.heldCount() != 0 {
		t.Errorf("lease not released: %v", leases.log())
	}
	if tap.Exists(tp) {
		t.Errorf("tap %s not deleted", tp)
	}
	if err := m.Destroy(context.Background(), "late"); err != nil {
		t.Fatal(err)
	}
}
