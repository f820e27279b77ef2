package vm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/node/vm/tap"
)

func guestSpec(t testing.TB, name, mode, marker string, media ...Media) Spec {
	kernel, _ := guestKernel(t)
	return Spec{Name: name, CPU: 1, Memory: 256, Media: media, Kernel: kernel, Initrd: guestInitrd(t),
		Cmdline: "console=ttyS0 panic=-1 quiet loglevel=3 zos.mode=" + mode + " zos.marker=" + marker}
}

func marker() string { return fmt.Sprintf("m%016x", rand.Uint64()) }

// A VM boots from the host kernel with its disk over NBD; the console log
// shows the guest's marker and the disk's pattern; pause/resume change
// qemu's status; reset boots again; a second disk is hot-plugged, seen by
// the guest and detached; a limit is set; a guest that ignores ACPI is
// killed after the shutdown deadline; destroy removes everything.
func TestVMLifecycle(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	leases := newFakeLeaser()
	reg := prometheus.NewRegistry()
	dir, err := os.MkdirTemp("", "zvm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(Config{Dir: dir, Leaser: leases, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroyAll(t, dir); os.RemoveAll(dir) })
	t.Cleanup(func() { m.Close() })
	t.Logf("accel %s", m.Accel())
	ctx := context.Background()
	pattern := strings.Repeat("A", 64)
	url := nbdServer(t, "boot", pattern)
	mk := marker()
	in, err := m.Create(ctx, guestSpec(t, "vm1", "wait", mk, Media{URL: url}))
	if err != nil {
		t.Fatal(err)
	}
	if in.State != StateRunning || in.CPU != 1 || in.Memory != 256 || len(in.Disks) != 1 || in.Disks[0].URL != url || in.PID == 0 {
		t.Fatalf("info after create: %+v", in)
	}
	if in.Disks[0].Node != "nbd0" {
		t.Fatalf("query-block did not report disk0: %+v", in.Disks)
	}
	con := followConsole(t, m, "vm1")
	con.waitFor(t, "ZOS-BOOT "+mk, 1)
	con.waitFor(t, "DISKS: vda", 1)
	con.waitFor(t, "PATTERN: "+pattern, 1)
	if got := gaugeValue(t, reg, "zos_vm_running"); got != 1 {
		t.Fatalf("zos_vm_running = %v, want 1", got)
	}
	if leases.heldCount() != 1 {
		t.Fatalf("leases held after create: %v", leases.log())
	}

	// Pause and resume.
	if err := m.Pause(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if in, _ := m.Info(ctx, "vm1"); in.State != StatePaused || in.Status != "paused" {
		t.Fatalf("after pause: %s/%s", in.State, in.Status)
	}
	if err := m.Resume(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if in, _ := m.Info(ctx, "vm1"); in.State != StateRunning || in.Status != "running" {
		t.Fatalf("after resume: %s/%s", in.State, in.Status)
	}

	// Reset: the kernel boots again.
	if err := m.Reset(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "ZOS-BOOT "+mk, 2)
	con.waitFor(t, "PATTERN: "+pattern, 2)

	// Reboot: Ctrl-Alt-Delete, which this guest's kernel turns into a reboot.
	if err := m.Reboot(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "ZOS-BOOT "+mk, 3)
	con.waitFor(t, "PATTERN: "+pattern, 3)
	if s, err := m.Get("vm1"); err != nil || s.Name != "vm1" || s.Memory != 256 {
		t.Fatalf("Get: %+v, %v", s, err)
	}

	// Hot-plug a second disk and take it away again.
	pattern2 := strings.Repeat("B", 64)
	url2 := nbdServer(t, "data", pattern2)
	id, err := m.AttachDisk(ctx, "vm1", Media{URL: url2})
	if err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "DISKS: vda vdb", 1)
	con.waitFor(t, "VDB: "+pattern2, 1)
	if in, _ := m.Info(ctx, "vm1"); len(in.Disks) != 2 || in.Disks[1].ID != id || in.Disks[1].Node == "" {
		t.Fatalf("info after attach: %+v", in.Disks)
	}
	if _, err := m.AttachDisk(ctx, "vm1", Media{URL: url2}); !errors.Is(err, ErrExists) {
		t.Fatalf("attaching the same disk twice: %v", err)
	}
	if err := m.LimitDiskIO(ctx, "vm1", id, IOTune{TotalIOPSSec: 100}); err != nil {
		t.Fatal(err)
	}
	if in, _ := m.Info(ctx, "vm1"); in.Disks[1].IOTune == nil || in.Disks[1].IOTune.TotalIOPSSec != 100 {
		t.Fatalf("iotune not recorded: %+v", in.Disks[1])
	}
	// A paused guest cannot let go of the disk: the detach times out and
	// says so, the disk stays; after resume a second detach completes.
	if err := m.Pause(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	err = m.DetachDisk(pctx, "vm1", id)
	pcancel()
	if err == nil || !strings.Contains(err.Error(), "still attached") {
		t.Fatalf("detach from a paused guest: %v", err)
	}
	if in, _ := m.Info(ctx, "vm1"); len(in.Disks) != 2 {
		t.Fatalf("disks after a timed-out detach: %+v", in.Disks)
	}
	if err := m.Resume(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(con.text(), "DISKS: vda \n")
	dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	err = m.DetachDisk(dctx, "vm1", id)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	con.waitFor(t, "DISKS: vda \n", before+1)
	if in, _ := m.Info(ctx, "vm1"); len(in.Disks) != 1 {
		t.Fatalf("info after detach: %+v", in.Disks)
	}
	if err := m.DetachDisk(ctx, "vm1", id); !errors.Is(err, ErrNoDisk) {
		t.Fatalf("detaching twice: %v", err)
	}

	// Shutdown: the guest has no ACPI handling, so it is killed after the deadline.
	pid := in.PID
	killed, err := m.Shutdown(ctx, "vm1", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !killed {
		t.Fatal("a guest without ACPI handling powered off?")
	}
	if in, _ := m.Info(ctx, "vm1"); in.State != StateStopped {
		t.Fatalf("after shutdown: %+v", in)
	}
	if processAlive(pid) {
		t.Fatalf("qemu pid %d still alive after shutdown", pid)
	}
	if leases.heldCount() != 0 {
		t.Fatalf("leases still held after shutdown: %v", leases.log())
	}
	if got := gaugeValue(t, reg, "zos_vm_running"); got != 0 {
		t.Fatalf("zos_vm_running = %v after shutdown", got)
	}
	if !strings.Contains(readConsole(t, m, "vm1"), "ZOS-BOOT "+mk) {
		t.Fatal("console log lost after shutdown")
	}
	for _, f := range []string{"qmp.sock", "console.sock", "qemu.pid"} {
		if _, err := os.Stat(filepath.Join(dir, "vm1", f)); err == nil {
			t.Errorf("%s left after shutdown", f)
		}
	}
	if err := m.Destroy(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "vm1")); !os.IsNotExist(err) {
		t.Fatalf("vm directory left after destroy: %v", err)
	}
	if _, err := m.Info(ctx, "vm1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("info after destroy: %v", err)
	}
	t.Logf("lease calls: %v", leases.log())
}

// A guest that powers off by itself: the VM is stopped, its leases are
// released, and its console is kept.
func TestGuestPowerOff(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	leases := newFakeLeaser()
	m, _ := testManager(t, leases)
	ctx := context.Background()
	url := nbdServer(t, "boot", "halt-pattern")
	mk := marker()
	if _, err := m.Create(ctx, guestSpec(t, "halt", "halt", mk, Media{URL: url})); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, m, "halt")
	if in, _ := m.Info(ctx, "halt"); !strings.Contains(in.Exit, "guest-shutdown") {
		t.Errorf("exit reason %q, want qemu's guest-shutdown", in.Exit)
	}
	c := readConsole(t, m, "halt")
	if !strings.Contains(c, "ZOS-BOOT "+mk) || !strings.Contains(c, "PATTERN: halt-pattern") {
		t.Fatalf("console:\n%s", c)
	}
	if leases.heldCount() != 0 {
		t.Fatalf("leases held after the guest powered off: %v", leases.log())
	}
	// Boot it again: same disk, the lease taken again, the console appended.
	if err := m.Start(ctx, "halt"); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "halt"); !errors.Is(err, ErrExists) {
		t.Fatalf("Start of a running vm: %v", err)
	}
	waitStopped(t, m, "halt")
	if c := readConsole(t, m, "halt"); strings.Count(c, "PATTERN: halt-pattern") != 2 {
		t.Fatalf("console after the second boot:\n%s", c)
	}
	if leases.heldCount() != 0 || len(leases.log()) != 4 {
		t.Fatalf("lease calls: %v", leases.log())
	}
}

func waitStopped(t *testing.T, m *Manager, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		in, err := m.Info(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if in.State == StateStopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest did not power off within 5 min:\n%s", readConsole(t, m, name))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// qemu dies while no Manager runs: the next Open finds it stopped and
// releases its leases and taps.
func TestRecoveryOfDeadVM(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	leases := newFakeLeaser()
	m, dir := testManager(t, leases)
	ctx := context.Background()
	br := fmt.Sprintf("ztb%06x", rand.Uint32()&0xffffff)
	t.Cleanup(func() { tap.DeleteBridge(br) })
	s := guestSpec(t, "dead", "wait", marker(), Media{URL: nbdServer(t, "boot", "x")})
	s.NICs = []NIC{{Type: "bridge", ID: br}}
	in, err := m.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Delete(in.NICs[0].Tap) })
	m.Close()
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for processAlive(in.PID) {
		time.Sleep(20 * time.Millisecond)
	}
	m2, err := Open(Config{Dir: dir, Leaser: leases})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	in2, err := m2.Info(ctx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	if in2.State != StateStopped || in2.Exit == "" {
		t.Fatalf("after restart: %+v", in2)
	}
	if leases.heldCount() != 0 {
		t.Fatalf("leases: %v", leases.log())
	}
	if tap.Exists(in.NICs[0].Tap) {
		t.Fatal("tap of a dead vm left after Open")
	}
}

// A new Manager over the same directory adopts a running VM (with a tap on
// a bridge) and controls it; destroy then removes the tap.
func TestRestartRecovery(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	leases := newFakeLeaser()
	m, dir := testManager(t, leases)
	ctx := context.Background()
	br := fmt.Sprintf("ztb%06x", rand.Uint32()&0xffffff)
	t.Cleanup(func() { tap.DeleteBridge(br) })
	url := nbdServer(t, "boot", "recover")
	mk := marker()
	s := guestSpec(t, "rec", "wait", mk, Media{URL: url})
	s.NICs = []NIC{{Type: "bridge", ID: br}, {Type: "default"}}
	in, err := m.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	tapName := in.NICs[0].Tap
	t.Cleanup(func() { tap.Delete(tapName) })
	if master, err := tap.Master(tapName); err != nil || master != br {
		t.Fatalf("tap %s on %q (%v), want bridge %s", tapName, master, err, br)
	}
	con := followConsole(t, m, "rec")
	con.waitFor(t, "ZOS-BOOT "+mk, 1)
	m.Close()

	m2, err := Open(Config{Dir: dir, Leaser: leases})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	in2, err := m2.Info(ctx, "rec")
	if err != nil {
		t.Fatal(err)
	}
	if in2.State != StateRunning || in2.PID != in.PID {
		t.Fatalf("after restart: %+v (before: pid %d)", in2, in.PID)
	}
	if list, _ := m2.List(ctx); len(list) != 1 {
		t.Fatalf("list after restart: %+v", list)
	}
	if err := m2.Pause(ctx, "rec"); err != nil {
		t.Fatal(err)
	}
	if in, _ := m2.Info(ctx, "rec"); in.State != StatePaused {
		t.Fatalf("adopted vm did not pause: %+v", in)
	}
	if err := m2.Resume(ctx, "rec"); err != nil {
		t.Fatal(err)
	}
	// The console keeps flowing into the log through the new Manager.
	if err := m2.Reset(ctx, "rec"); err != nil {
		t.Fatal(err)
	}
	con2 := followConsole(t, m2, "rec")
	con2.waitFor(t, "ZOS-BOOT "+mk, 2)
	if err := m2.Destroy(ctx, "rec"); err != nil {
		t.Fatal(err)
	}
	if processAlive(in.PID) {
		t.Fatalf("qemu %d alive after destroy", in.PID)
	}
	if tap.Exists(tapName) {
		t.Fatalf("tap %s left after destroy", tapName)
	}
	if leases.heldCount() != 0 {
		t.Fatalf("leases after destroy: %v", leases.log())
	}
}

// Bad input leaves nothing behind and says what is wrong.
func TestCreateBadInput(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd")
	leases := newFakeLeaser()
	m, dir := testManager(t, leases)
	ctx := context.Background()
	kernel, _ := guestKernel(t)
	url := nbdServer(t, "boot", "x")
	base := Spec{Name: "bad", Memory: 128, Kernel: kernel, Media: []Media{{URL: url}}}
	refused := "nbd://127.0.0.1:1/taken"
	leases.refuse[refused] = true
	cases := []struct {
		name string
		mod  func(*Spec)
		want error
		msg  string
	}{
		{"memory 0", func(s *Spec) { s.Memory = 0 }, ErrInvalid, "memory 0"},
		{"bad url", func(s *Spec) { s.Media[0].URL = "http://x/y" }, ErrInvalid, "scheme"},
		{"no export", func(s *Spec) { s.Media[0].URL = "nbd://127.0.0.1:10809" }, ErrInvalid, "export"},
		{"missing vdisk", func(s *Spec) { s.Media[0].URL = strings.TrimSuffix(url, "boot") + "nosuch" }, ErrStart, "nosuch"},
		{"nbd down", func(s *Spec) { s.Media[0].URL = "nbd://127.0.0.1:1/x" }, ErrStart, "Connection refused"},
		{"lease refused", func(s *Spec) { s.Media[0].URL = refused }, ErrLease, "node n2"},
		{"qemu fails", func(s *Spec) { s.Kernel = "/nonexistent/vmlinuz" }, ErrStart, "/nonexistent/vmlinuz"},
		{"bad nic", func(s *Spec) { s.NICs = []NIC{{Type: "macvtap"}} }, ErrInvalid, "macvtap"},
	}
	for _, c := range cases {
		s := base
		s.Media = []Media{base.Media[0]}
		c.mod(&s)
		_, err := m.Create(ctx, s)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want %v mentioning %q", c.name, err, c.want, c.msg)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
		assertNothingLeft(t, m, dir, leases)
	}
	// A second Manager on the same directory is refused.
	if m2, err := Open(Config{Dir: dir, Accel: "tcg"}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Manager on %s: %v", dir, err)
		if m2 != nil {
			m2.Close()
		}
	}
	// qemu missing.
	m2, dir2 := testManagerCfg(t, Config{Accel: "tcg", QEMU: "/nonexistent/qemu", Leaser: leases})
	if _, err := m2.Create(ctx, base); !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "/nonexistent/qemu") {
		t.Errorf("qemu missing: %v", err)
	}
	assertNothingLeft(t, m2, dir2, leases)
	// A bridge the agent's provider refuses.
	m3, dir3 := testManagerCfg(t, Config{Accel: "tcg", Leaser: leases, Bridges: refuseBridges{}})
	bs := base
	bs.NICs = []NIC{{Type: "bridge", ID: "nosuchbr"}}
	if _, err := m3.Create(ctx, bs); err == nil || !strings.Contains(err.Error(), "create it first") {
		t.Errorf("refused bridge: %v", err)
	}
	assertNothingLeft(t, m3, dir3, leases)
	// A second VM with the same name.
	_, err := m.Create(ctx, Spec{Name: "dup", Memory: 64, Kernel: kernel, Media: []Media{{URL: url, ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, Spec{Name: "dup", Memory: 64, Kernel: kernel}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: %v", err)
	}
	// A disk read-write in one VM is refused to another VM of the node, with
	// no lease call for the refused one.
	if _, err := m.Create(ctx, Spec{Name: "rw1", Memory: 64, Kernel: kernel, Media: []Media{{URL: url}}}); err != nil {
		t.Fatal(err)
	}
	calls := len(leases.log())
	_, err = m.Create(ctx, Spec{Name: "rw2", Memory: 64, Kernel: kernel, Media: []Media{{URL: url}}})
	if !errors.Is(err, ErrLease) || !strings.Contains(err.Error(), "read-write to vm rw1") {
		t.Errorf("second read-write user of a disk: %v", err)
	}
	if len(leases.log()) != calls {
		t.Errorf("the refused create called the leaser: %v", leases.log()[calls:])
	}
	if _, err := m.Create(ctx, Spec{Name: "ro", Memory: 64, Kernel: kernel, Media: []Media{{URL: url, ReadOnly: true}}}); err != nil {
		t.Errorf("read-only user of a disk held read-write: %v", err)
	}
}

func assertNothingLeft(t *testing.T, m *Manager, dir string, l *fakeLeaser) {
	t.Helper()
	if l.heldCount() != 0 {
		t.Errorf("leases left: %v", l.log())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != ".lock" {
			t.Errorf("left in %s: %s", dir, e.Name())
		}
	}
	if list, _ := m.List(context.Background()); len(list) != 0 {
		t.Errorf("vms listed: %+v", list)
	}
}

func readConsole(t testing.TB, m *Manager, name string) string {
	r, err := m.Console(name, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func processAlive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(st), ')')
	return i < 0 || i+2 >= len(st) || st[i+2] != 'Z'
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

type refuseBridges struct{}

func (refuseBridges) EnsureBridge(_ context.Context, name string) error {
	return fmt.Errorf("bridge %s does not exist (create it first)", name)
}
