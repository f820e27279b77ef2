package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/internal/testguest"
	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/container/network"
	"github.com/zosproject/zos/node/vm"
)

// vmDeadline bounds each wait for a guest: TCG boots on a loaded 2-core
// machine take minutes.
const vmDeadline = 6 * time.Minute

// vmCluster is a cluster whose nodes run VMs, with the guest kernel and
// initramfs ready.
type vmCluster struct {
	*testcluster.Cluster
	t              *testing.T
	kernel, initrd string
}

func startVMCluster(t *testing.T, n int) *vmCluster {
	return startVMClusterOpts(t, n, testcluster.Options{})
}

func startVMClusterOpts(t *testing.T, n int, opts testcluster.Options) *vmCluster {
	testguest.Require(t, "qemu-system-x86_64", "qemu-io", "busybox", "cpio", "mkfs.ext4", "debugfs")
	kernel, _ := testguest.Kernel(t)
	initrd := testguest.Initrd(t)
	opts.Args = append(opts.Args, "--lease-ttl", "6s")
	c := testcluster.Start(t, n, opts)
	vc := &vmCluster{Cluster: c, t: t, kernel: kernel, initrd: initrd}
	// Runs before the nodes are killed: no qemu, tap or lease outlives the test.
	t.Cleanup(vc.destroyAll)
	return vc
}

func (c *vmCluster) agent(i int) *client.Client {
	ac := client.New(c.Nodes[i].IP+":6379", c.Token)
	c.t.Cleanup(func() { ac.Close() })
	return ac
}

// destroyAll destroys every VM of every live node, then kills any qemu
// still running on a node directory (a node that died with VMs).
func (c *vmCluster) destroyAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range c.Nodes {
		if !c.Alive(i) {
			continue
		}
		ac := client.New(c.Nodes[i].IP+":6379", c.Token)
		l, _ := ac.KVMList(ctx)
		for _, in := range l {
			if err := ac.KVM(ctx, "kvm.destroy", in.Name); err != nil {
				c.t.Logf("cleanup: destroy %s on %s: %v", in.Name, c.Nodes[i].ID, err)
			}
		}
		ac.Close()
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		for _, n := range c.Nodes {
			if strings.Contains(string(b), "qemu") && strings.Contains(string(b), n.Dir+"/vms/") {
				c.t.Logf("cleanup: killing leftover qemu %d", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func (c *vmCluster) spec(name, mode, marker string, media ...vm.Media) vm.Spec {
	return vm.Spec{Name: name, CPU: 1, Memory: 256, Media: media, Kernel: c.kernel, Initrd: c.initrd,
		Cmdline: testguest.Cmdline(mode, marker)}
}

func (c *vmCluster) cli(i int, args ...string) string {
	c.t.Helper()
	out, err := c.CLI(i, args...)
	if err != nil {
		c.t.Fatalf("zos %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// console returns the VM's serial log so far.
func console(t *testing.T, ac *client.Client, name string) string {
	t.Helper()
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ac.KVMConsole(ctx, name, false, func(l string) { b.WriteString(l + "\n") }); err != nil {
		t.Fatalf("console of %s: %v", name, err)
	}
	return b.String()
}

// waitConsole waits until the VM's console holds every one of want.
func waitConsole(t *testing.T, ac *client.Client, name string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(vmDeadline)
	for {
		s := console(t, ac, name)
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(s, w)
		}
		if ok {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("console of %s never showed %q:\n%s", name, want, s)
		}
		time.Sleep(time.Second)
	}
}

func waitVMStopped(t *testing.T, ac *client.Client, name string) vm.Info {
	t.Helper()
	deadline := time.Now().Add(vmDeadline)
	for {
		in, err := ac.KVMInfo(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if in.State == vm.StateStopped {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after %v:\n%s", name, in.State, vmDeadline, console(t, ac, name))
		}
		time.Sleep(time.Second)
	}
}

// attachedTo returns the node holding vdisk name's read-write lease ("").
func (c *vmCluster) attachedTo(name string) string {
	var in struct {
		AttachedTo string `json:"attached_to"`
	}
	out := c.cli(0, "vdisk", "info", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		c.t.Fatalf("vdisk info: %v: %s", err, out)
	}
	return in.AttachedTo
}

// TestVMExt4RootOnVdisk: a vdisk imported from an ext4 image (mkfs.ext4 -d
// of a busybox root) boots the host's Debian kernel through kvm.create on a
// real node; the guest mounts /dev/vda as root, writes /hello, syncs and
// powers off. After kvm.destroy the file is in the vdisk (snapshot, export,
// debugfs). A clone of the snapshot boots again, through the CLI (zos vm
// create, zos vm console -f until the guest powers off, zos vm info),
// and finds the file; the template's snapshot is untouched by the clone's
// writes.
func TestVMExt4RootOnVdisk(t *testing.T) {
	c := startVMCluster(t, 3)
	ac := c.agent(0)
	ctx := context.Background()
	dir := t.TempDir()
	img := testguest.RootFS(t, dir, 64)
	c.cli(0, "vdisk", "create", "root", "--image", img)

	boot := func(name, vdisk string) string {
		t.Helper()
		mk := testguest.Marker()
		in, err := ac.KVMCreate(ctx, c.spec(name, "root", mk, vm.Media{URL: vdisk}))
		if err != nil {
			t.Fatal(err)
		}
		if in.State != vm.StateRunning || len(in.Disks) != 1 || !strings.HasSuffix(in.Disks[0].URL, "/"+vdisk) {
			t.Fatalf("kvm.create: %+v", in)
		}
		if got := c.attachedTo(vdisk); got != c.Nodes[0].ID {
			t.Fatalf("vdisk %s attached to %q while the vm runs, want %s", vdisk, got, c.Nodes[0].ID)
		}
		waitVMStopped(t, ac, name)
		s := console(t, ac, name)
		if !strings.Contains(s, "ROOT-INIT: zos-ext4-root") || !strings.Contains(s, "WROTE: "+mk) {
			t.Fatalf("%s did not boot from its ext4 root:\n%s", name, s)
		}
		if err := ac.KVM(ctx, "kvm.destroy", name); err != nil {
			t.Fatal(err)
		}
		if got := c.attachedTo(vdisk); got != "" {
			t.Fatalf("vdisk %s still attached to %s after destroy", vdisk, got)
		}
		return s
	}
	hello := func(export string) string {
		t.Helper()
		f := filepath.Join(dir, strings.ReplaceAll(export, "@", "_")+".raw")
		c.cli(0, "vdisk", "export", export, "-o", f)
		defer os.Remove(f)
		return testguest.DebugfsCat(t, f, "/hello")
	}

	c1 := boot("root1", "root")
	wrote1 := testguest.LineAfter(c1, "WROTE: ")
	c.cli(0, "vdisk", "snapshot", "root", "v1")
	if got := hello("root@v1"); got != wrote1 {
		t.Fatalf("/hello in the vdisk after destroy = %q, want %q", got, wrote1)
	}

	// The clone boots through the CLI: zos vm create, then zos vm console
	// -f streams the serial log until the guest powers off.
	c.cli(0, "vdisk", "clone", "root@v1", "root-c1")
	mk2 := testguest.Marker()
	node := c.Nodes[0].IP
	if out := c.cli(0, "vm", "create", node, "root2", "--disk", "root-c1", "--memory", "256M", "--kernel", c.kernel,
		"--initrd", c.initrd, "--cmdline", testguest.Cmdline("root", mk2), "--tag", "e2e"); !strings.Contains(out, "state:   running") {
		t.Fatalf("zos vm create: %s", out)
	}
	c2 := c.cli(0, "vm", "console", node, "root2", "-f")
	if !strings.Contains(c2, "FOUND: "+wrote1) || !strings.Contains(c2, "WROTE: "+mk2) {
		t.Fatalf("the clone's guest did not find the template's file:\n%s", c2)
	}
	waitVMStopped(t, ac, "root2")
	if out := c.cli(0, "vm", "info", node, "root2"); !strings.Contains(out, "state:   stopped") || !strings.Contains(out, "root-c1") {
		t.Fatalf("zos vm info: %s", out)
	}
	c.cli(0, "vm", "destroy", node, "root2")
	wrote2 := testguest.LineAfter(c2, "WROTE: ")
	c.cli(0, "vdisk", "snapshot", "root-c1", "after")
	if got := hello("root-c1@after"); got != wrote2 {
		t.Fatalf("/hello in the clone = %q, want %q", got, wrote2)
	}
	if got := hello("root@v1"); got != wrote1 {
		t.Fatalf("booting the clone changed the template: /hello = %q", got)
	}
	if l, err := ac.KVMList(ctx); err != nil || len(l) != 0 {
		t.Fatalf("kvm.list after destroys: %v %v", l, err)
	}
}

// TestVMLeasesHotplugRestart: a vdisk attached read-write by a VM on n2 is
// refused to kvm.create on n1 (naming n2), and to a second VM on n2; after
// destroy on n2 it is refused on n1 while an NBD client (qemu-io) of n1
// has it read-write; then n1 gets it. A second vdisk is hot-plugged into the
// running VM (the guest sees /dev/vdb and its content) and detached. The
// node is killed with -9 and started again: the VM is still listed,
// pauses, resumes and is destroyed, its lease given back.
func TestVMLeasesHotplugRestart(t *testing.T) {
	c := startVMCluster(t, 3)
	ctx := context.Background()
	dir := t.TempDir()
	c.cli(0, "vdisk", "create", "data", "--image", testguest.PatternImage(t, dir, "data", strings.Repeat("A", 64), 16))
	c.cli(0, "vdisk", "create", "data2", "--image", testguest.PatternImage(t, dir, "data2", strings.Repeat("B", 64), 16))
	a1, a2 := c.agent(0), c.agent(1)

	if _, err := a2.KVMCreate(ctx, c.spec("hold", "wait", testguest.Marker(), vm.Media{URL: "data"})); err != nil {
		t.Fatal(err)
	}
	_, err := a1.KVMCreate(ctx, c.spec("steal", "wait", testguest.Marker(), vm.Media{URL: "data"}))
	if err == nil || !strings.Contains(err.Error(), "attached read-write on node "+c.Nodes[1].ID) {
		t.Fatalf("kvm.create of a vdisk attached on %s: %v", c.Nodes[1].ID, err)
	}
	_, err = a2.KVMCreate(ctx, c.spec("steal2", "wait", testguest.Marker(), vm.Media{URL: "data"}))
	if err == nil || !strings.Contains(err.Error(), "attached read-write to vm hold") {
		t.Fatalf("kvm.create of a vdisk attached to another vm of the node: %v", err)
	}
	// The CLI says the same.
	if out, err := c.CLI(0, "vm", "create", c.Nodes[0].IP, "steal3", "--disk", "data", "--kernel", c.kernel, "--initrd", c.initrd); err == nil ||
		!strings.Contains(out, "attached read-write on node "+c.Nodes[1].ID) {
		t.Fatalf("zos vm create of an attached vdisk: %v\n%s", err, out)
	}
	for _, a := range []*client.Client{a1, a2} {
		if l, _ := a.KVMList(ctx); len(l) > 1 {
			t.Fatalf("refused creates left vms behind: %+v", l)
		}
	}
	if err := a2.KVM(ctx, "kvm.destroy", "hold"); err != nil {
		t.Fatal(err)
	}

	// An NBD client of n1 holding it read-write: refused too.
	qio := exec.Command("qemu-io", "-f", "raw", "-c", "sleep 600000", "nbd://"+c.Nodes[0].IP+":10809/data")
	if err := qio.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qio.Process.Kill(); qio.Wait() })
	testcluster.Eventually(t, time.Minute, func() error {
		if got := c.attachedTo("data"); got != c.Nodes[0].ID {
			return fmt.Errorf("data attached to %q, want qemu-io's %s", got, c.Nodes[0].ID)
		}
		return nil
	})
	_, err = a1.KVMCreate(ctx, c.spec("steal4", "wait", testguest.Marker(), vm.Media{URL: "data"}))
	if err == nil || !strings.Contains(err.Error(), "attached read-write on this node by another client") {
		t.Fatalf("kvm.create of a vdisk an NBD client of the node has read-write: %v", err)
	}
	qio.Process.Kill()
	qio.Wait()

	// n1 gets the vdisk once the others let go of it.
	mk := testguest.Marker()
	testcluster.Eventually(t, time.Minute, func() error {
		_, err := a1.KVMCreate(ctx, c.spec("hot", "wait", mk, vm.Media{URL: "data"}))
		return err
	})
	waitConsole(t, a1, "hot", "ZOS-BOOT "+mk, "DISKS: vda ", "PATTERN: "+strings.Repeat("A", 64))

	// Hot-plug through the CLI.
	if out := c.cli(0, "vm", "attach", c.Nodes[0].IP, "hot", "data2"); !strings.Contains(out, "as disk1") {
		t.Fatalf("zos vm attach: %s", out)
	}
	waitConsole(t, a1, "hot", "DISKS: vda vdb ", "VDB: "+strings.Repeat("B", 64))
	if got := c.attachedTo("data2"); got != c.Nodes[0].ID {
		t.Fatalf("data2 attached to %q after attach", got)
	}
	c.cli(0, "vm", "detach", c.Nodes[0].IP, "hot", "data2")
	in, err := a1.KVMInfo(ctx, "hot")
	if err != nil || len(in.Disks) != 1 {
		t.Fatalf("info after detach: %+v %v", in, err)
	}
	testcluster.Eventually(t, time.Minute, func() error {
		s := console(t, a1, "hot")
		if i := strings.LastIndex(s, "DISKS: "); !strings.HasPrefix(s[i:], "DISKS: vda \n") {
			return fmt.Errorf("guest still lists %q", s[i:])
		}
		return nil
	})
	testcluster.Eventually(t, time.Minute, func() error {
		if got := c.attachedTo("data2"); got != "" {
			return fmt.Errorf("data2 still attached to %s after detach", got)
		}
		return nil
	})

	// kill -9 the node with the VM running; start it again.
	pid := in.PID
	c.Kill(0)
	if !processAlive(pid) {
		t.Fatal("qemu died with the node")
	}
	c.Restart(0)
	c.WaitReady(0, 2*time.Minute)
	a1 = c.agent(0)
	var l []vm.Info
	testcluster.Eventually(t, time.Minute, func() error {
		var err error
		l, err = a1.KVMList(ctx)
		return err
	})
	if len(l) != 1 || l[0].Name != "hot" || l[0].State != vm.StateRunning || l[0].PID != pid {
		t.Fatalf("kvm.list after the restart: %+v", l)
	}
	if out := c.cli(0, "vm", "list", c.Nodes[0].IP); !strings.Contains(out, "hot") || !strings.Contains(out, "running") {
		t.Fatalf("zos vm list: %s", out)
	}
	if err := a1.KVM(ctx, "kvm.pause", "hot"); err != nil {
		t.Fatal(err)
	}
	if in, err := a1.KVMInfo(ctx, "hot"); err != nil || in.State != vm.StatePaused {
		t.Fatalf("info after pause: %+v %v", in, err)
	}
	if err := a1.KVM(ctx, "kvm.resume", "hot"); err != nil {
		t.Fatal(err)
	}
	if got := c.attachedTo("data"); got != c.Nodes[0].ID {
		t.Fatalf("data attached to %q after the restart, want %s", got, c.Nodes[0].ID)
	}
	c.cli(0, "vm", "destroy", c.Nodes[0].IP, "hot")
	testcluster.Eventually(t, time.Minute, func() error {
		if got := c.attachedTo("data"); got != "" {
			return fmt.Errorf("data still attached to %s after destroy", got)
		}
		return nil
	})
	if processAlive(pid) {
		t.Fatalf("qemu %d still runs after destroy", pid)
	}
}

// TestVMBadInput: a missing vdisk, memory 0, a bad NBD URL, an unreachable
// NBD server, a missing qemu and one that crashes at start each answer a
// clear ERROR (qemu's own message when qemu ran), and leave no VM, no
// qemu and no lease behind.
func TestVMBadInput(t *testing.T) {
	c := startVMCluster(t, 3)
	ctx := context.Background()
	c.cli(0, "vdisk", "create", "ok", "--size", "16M")
	a := c.agent(0)
	nothingLeft := func(what string) {
		t.Helper()
		if l, err := a.KVMList(ctx); err != nil || len(l) != 0 {
			t.Fatalf("%s: kvm.list: %+v %v", what, l, err)
		}
		if got := c.attachedTo("ok"); got != "" {
			t.Fatalf("%s: vdisk ok still attached to %s", what, got)
		}
		ents, _ := os.ReadDir(filepath.Join(c.Nodes[0].Dir, "vms"))
		for _, e := range ents {
			if e.IsDir() {
				t.Fatalf("%s: %s left in the vms directory", what, e.Name())
			}
		}
	}
	for _, tc := range []struct {
		name  string
		spec  vm.Spec
		wants []string
	}{
		{"missing vdisk", c.spec("b1", "halt", "x", vm.Media{URL: "ok"}, vm.Media{URL: "nope"}), []string{"ERROR", "vdisk nope does not exist"}},
		{"memory 0", func() vm.Spec { s := c.spec("b2", "halt", "x", vm.Media{URL: "ok"}); s.Memory = 0; return s }(), []string{"code 400", "memory 0"}},
		{"bad url", c.spec("b3", "halt", "x", vm.Media{URL: "ok"}, vm.Media{URL: "nbd://127.0.0.1:99999/x"}), []string{"code 400", "bad port"}},
		{"bad scheme", c.spec("b4", "halt", "x", vm.Media{URL: "http://127.0.0.1/x"}), []string{"code 400", "scheme"}},
		{"unreachable", c.spec("b5", "halt", "x", vm.Media{URL: "ok"}, vm.Media{URL: "nbd://127.0.0.1:1/x"}), []string{"ERROR", "Failed to connect"}},
		{"missing kernel", func() vm.Spec {
			s := c.spec("b6", "halt", "x", vm.Media{URL: "ok"})
			s.Kernel = "/nonexistent"
			return s
		}(), []string{"ERROR", "/nonexistent"}},
	} {
		_, err := a.KVMCreate(ctx, tc.spec)
		if err == nil {
			t.Fatalf("%s: kvm.create succeeded", tc.name)
		}
		for _, w := range tc.wants {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
		t.Logf("%s: %v", tc.name, err)
		nothingLeft(tc.name)
	}

	// qemu missing, then qemu crashing at start: node 1 restarted with --qemu.
	crash := filepath.Join(t.TempDir(), "qemu-crash")
	os.WriteFile(crash, []byte("#!/bin/sh\necho 'qemu-system-x86_64: boom: this qemu always crashes' >&2\nexit 1\n"), 0o755)
	args := c.Nodes[0].Args()
	for _, tc := range []struct{ qemu, want string }{
		{"/nonexistent/qemu-system-x86_64", "/nonexistent/qemu-system-x86_64"},
		{crash, "boom: this qemu always crashes"},
	} {
		c.Stop(0)
		c.Nodes[0].SetArgs(append(append([]string{}, args...), "--qemu", tc.qemu))
		c.Restart(0)
		c.WaitReady(0, 2*time.Minute)
		a = c.agent(0)
		_, err := a.KVMCreate(ctx, c.spec("bq", "halt", "x", vm.Media{URL: "ok"}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("qemu %s: kvm.create: %v", tc.qemu, err)
		}
		t.Logf("qemu %s: %v", tc.qemu, err)
		nothingLeft("qemu " + tc.qemu)
	}
}

// processAlive reports whether pid runs (a zombie does not: qemu daemonized
// and its reaper is init).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// TestVMReapedByPID1: a node running as PID 1 (in a PID namespace of its
// own, as zos does as a host's init) reaps the qemu of a VM whose guest
// powered off: qemu daemonizes, so it is the node's child then, and no
// zombie is left.
func TestVMReapedByPID1(t *testing.T) {
	testguest.Require(t, "unshare")
	ip := loopback.Fresh("internal/testcluster") + "1"
	c := startVMClusterOpts(t, 1, testcluster.Options{Wrap: func(int) ([]string, string) {
		return []string{"unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"}, ip
	}})
	c.cli(0, "vdisk", "create", "ok", "--size", "16M")
	a := c.agent(0)
	// Twice: the reaper must not take the `qemu -daemonize` launcher the
	// runtime waits for (create would fail with "no child processes").
	for _, name := range []string{"halt0", "halt1"} {
		mk := testguest.Marker()
		if _, err := a.KVMCreate(context.Background(), c.spec(name, "halt", mk, vm.Media{URL: "ok"})); err != nil {
			t.Fatal(err)
		}
		waitVMStopped(t, a, name)
		if s := console(t, a, name); !strings.Contains(s, "ZOS-BOOT "+mk) {
			t.Fatalf("the guest did not boot:\n%s", s)
		}
	}
	// The node (PID 1 inside) is the child of unshare; no qemu zombie may
	// hang under it.
	testcluster.Eventually(t, time.Minute, func() error {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
			if err != nil {
				continue
			}
			st := string(b)
			i := strings.LastIndexByte(st, ')')
			if i < 0 || i+2 >= len(st) || st[i+2] != 'Z' || !strings.Contains(st[:i], "(qemu") {
				continue
			}
			f := strings.Fields(st[i+2:])
			parent, _ := os.ReadFile(filepath.Join("/proc", f[1], "cmdline"))
			if strings.Contains(string(parent), c.Nodes[0].Dir) {
				return fmt.Errorf("qemu %s is a zombie under the node", e.Name())
			}
		}
		return nil
	})
	for _, name := range []string{"halt0", "halt1"} {
		if err := a.KVM(context.Background(), "kvm.destroy", name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVMBridgeNIC: a VM with a bridge nic on a bridge made by the agent's
// bridge.create gets a tap on it; the guest pings the bridge's address; a
// port forward to the nic's ip (nftables DNAT) reaches a TCP server in the
// guest from the node's address and from 127.0.0.1; destroy deletes the
// tap and the forward.
func TestVMBridgeNIC(t *testing.T) {
	c := startVMCluster(t, 1)
	ctx := context.Background()
	a := c.agent(0)
	c.cli(0, "vdisk", "create", "ok", "--size", "16M")
	sub := 100 + rand.IntN(100)
	br := fmt.Sprintf("zvt%d", sub)
	hostIP := fmt.Sprintf("10.253.%d.1", sub)
	if err := a.JSON(ctx, "bridge.create", map[string]any{"name": br,
		"network": map[string]any{"mode": "static", "settings": map[string]any{"cidr": hostIP + "/24"}}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.JSON(context.Background(), "bridge.delete", map[string]any{"name": br}, nil)
		// The forward's loopback and hairpin masquerades of the bridge.
		if nat, err := network.NewNAT("zos"); err == nil {
			nat.DeleteTagged("loopback:" + br)
			nat.DeleteTagged("hairpin:" + br)
		}
	})
	mk := testguest.Marker()
	s := c.spec("net1", "wait", mk, vm.Media{URL: "ok"})
	guestIP := fmt.Sprintf("10.253.%d.2", sub)
	hostPort := 20000 + rand.IntN(20000)
	s.NICs = []vm.NIC{{Type: "bridge", ID: br, IP: guestIP}}
	s.Port = map[string]int{fmt.Sprint(hostPort): 7777}
	s.Cmdline += fmt.Sprintf(" zos.ip=%s/24 zos.peer=%s zos.listen=7777", guestIP, hostIP)
	in, err := a.KVMCreate(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.NICs) != 1 || in.NICs[0].Bridge != br || in.NICs[0].Tap == "" {
		t.Fatalf("nics: %+v", in.NICs)
	}
	tap := in.NICs[0].Tap
	if _, err := os.Stat("/sys/class/net/" + br + "/brif/" + tap); err != nil {
		t.Fatalf("tap %s is not on %s: %v", tap, br, err)
	}
	waitConsole(t, a, "net1", "PING-OK "+hostIP, "LISTENING 7777")
	// The forward (nftables DNAT) from the node's address and from 127.0.0.1.
	for _, host := range []string{c.Nodes[0].IP, "127.0.0.1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(hostPort))
		testcluster.Eventually(t, time.Minute, func() error {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			b, _ := io.ReadAll(conn)
			if !strings.Contains(string(b), "ZOS-NC "+mk) {
				return fmt.Errorf("%s answered %q", addr, b)
			}
			return nil
		})
	}
	if err := a.KVM(ctx, "kvm.destroy", "net1"); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("nft", "list", "table", "ip", "zos").CombinedOutput(); strings.Contains(string(out), fmt.Sprint(hostPort)) {
		t.Fatalf("the forward outlived the vm:\n%s", out)
	}
	if _, err := os.Stat("/sys/class/net/" + tap); err == nil {
		t.Fatalf("tap %s left after destroy", tap)
	}
}
