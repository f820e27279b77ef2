package vm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if initrdPath != "" {
		os.RemoveAll(filepath.Dir(initrdPath))
	}
	if code == 0 {
		// Every monitor, console pump and watcher ends with its VM or Manager.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// virtioModules are loaded by the guest's /init, in this order.
var virtioModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
	"crc16", "crc32c_generic", "mbcache", "jbd2", "ext4", "failover", "net_failover", "virtio_net"}

func requireBins(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found: install it (scripts/deps.sh test)", b)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (taps, bridges)")
	}
}

// guestKernel finds a kernel in /boot and its module directory.
func guestKernel(t testing.TB) (kernel, modDir string) {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range ks {
		ver := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if st, err := os.Stat(filepath.Join("/lib/modules", ver)); err == nil && st.IsDir() {
			return k, filepath.Join("/lib/modules", ver)
		}
	}
	t.Fatal("no /boot/vmlinuz-* with modules in /lib/modules: install linux-image-amd64 (scripts/deps.sh test)")
	return "", ""
}

var (
	initrdOnce sync.Once
	initrdPath string
	initrdErr  error
)

// guestInit is the guest's /init. It prints ZOS-BOOT <marker>, its virtio
// disks and the first 64 bytes of /dev/vda; with zos.mode=halt it powers
// off, else it polls /sys/block and prints every change (DISKS: …) and the
// pattern of a new vdb (VDB: …). It has no ACPI handling: a power button
// press does nothing.
const guestInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in MODULES; do $B insmod /lib/modules/$m.ko 2>/dev/null || echo "insmod $m failed"; done
for w in $($B cat /proc/cmdline); do case $w in zos.marker=*) M=${w#zos.marker=};; zos.mode=*) MODE=${w#zos.mode=};; zos.ip=*) IP=${w#zos.ip=};; zos.peer=*) PEER=${w#zos.peer=};; esac; done
echo 1 > /proc/sys/kernel/ctrl-alt-del
echo "ZOS-BOOT $M"
if [ -n "$IP" ]; then
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do $B sleep 0.1; i=$((i+1)); done
  $B ip link set lo up; $B ip addr add $IP dev eth0; $B ip link set eth0 up
  if $B ping -c 1 -W 2 $PEER >/dev/null 2>&1 || $B ping -c 3 -W 5 $PEER >/dev/null 2>&1; then echo "PING-OK $PEER"; else echo "PING-FAILED $PEER"; fi
fi
i=0
while [ ! -b /dev/vda ] && [ $i -lt 600 ]; do $B sleep 0.1; i=$((i+1)); done
disks() { $B ls /sys/block | $B grep '^vd' | $B tr '\n' ' '; }
echo "DISKS: $(disks)"
echo "PATTERN: $($B dd if=/dev/vda bs=64 count=1 2>/dev/null | $B tr -d '\000')"
if [ "$MODE" = halt ]; then $B sync; $B poweroff -f; fi
if [ "$MODE" = root ]; then
  $B mkdir -p /mnt
  $B mount -t ext4 /dev/vda /mnt && exec $B switch_root /mnt /sbin/init
  echo "ROOT MOUNT FAILED"; $B poweroff -f
fi
last=$(disks)
while true; do
  now=$(disks)
  if [ "$now" != "$last" ]; then
    echo "DISKS: $now"
    case "$now" in *vdb*) i=0; while [ ! -b /dev/vdb ] && [ $i -lt 100 ]; do $B sleep 0.1; i=$((i+1)); done
      echo "VDB: $($B dd if=/dev/vdb bs=64 count=1 2>/dev/null | $B tr -d '\000')";; esac
    last=$now
  fi
  $B sleep 0.3
done
`

// guestInitrd builds (once per test binary) a busybox initramfs with the
// virtio modules and guestInit.
func guestInitrd(t testing.TB) string {
	t.Helper()
	_, modDir := guestKernel(t)
	initrdOnce.Do(func() { initrdPath, initrdErr = buildInitrd(modDir) })
	if initrdErr != nil {
		t.Fatal(initrdErr)
	}
	return initrdPath
}

func buildInitrd(modDir string) (string, error) {
	dir, err := os.MkdirTemp("", "zos-vm-initrd-")
	if err != nil {
		return "", err
	}
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox not found: install busybox-static (scripts/deps.sh test)")
	}
	if err := copyFile(bb, filepath.Join(root, "bin/busybox"), 0o755); err != nil {
		return "", err
	}
	for _, m := range virtioModules {
		out := filepath.Join(root, "lib/modules", m+".ko")
		src := findModule(modDir, m)
		if src == "" {
			return "", fmt.Errorf("module %s not found under %s", m, modDir)
		}
		var dec string
		switch {
		case strings.HasSuffix(src, ".xz"):
			dec = "xz -dc"
		case strings.HasSuffix(src, ".zst"):
			dec = "zstd -qdc"
		case strings.HasSuffix(src, ".gz"):
			dec = "gzip -dc"
		}
		if dec == "" {
			err = copyFile(src, out, 0o644)
		} else {
			err = exec.Command("sh", "-c", fmt.Sprintf("%s %q > %q", dec, src, out)).Run()
		}
		if err != nil {
			return "", fmt.Errorf("module %s: %v", m, err)
		}
	}
	init := strings.Replace(guestInit, "MODULES", strings.Join(virtioModules, " "), 1)
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(init), 0o755); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "initrd.gz")
	if out, err := exec.Command("sh", "-c", fmt.Sprintf("cd %q && find . | cpio -o -H newc --quiet | gzip -1 > %q", root, img)).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cpio: %v: %s", err, out)
	}
	return img, nil
}

// findModule returns the path of module name (NAME.ko, possibly
// compressed) under modDir/kernel, or "".
func findModule(modDir, name string) string {
	var found string
	filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return nil
		}
		b := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if b == name+ext {
				found = p
				return filepath.SkipAll
			}
		}
		return nil
	})
	return found
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// nbdServer serves a 16 MiB raw file whose first bytes are pattern over
// qemu-nbd (shared, persistent), killed at cleanup. It returns the URL.
func nbdServer(t testing.TB, export, pattern string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), export+".raw")
	b := make([]byte, 16<<20)
	copy(b, pattern)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return nbdServe(t, f, "raw", export)
}

// nbdServe serves file (in format raw or qcow2) as export over qemu-nbd.
func nbdServe(t testing.TB, f, format, export string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("qemu-nbd", "-f", format, "-x", export, "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-t", "-e", "8", f)
	var stderr bytes.Buffer // the readiness probe below makes qemu-nbd complain: show it only on failure
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("qemu-nbd %s: %s", export, stderr.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 300 {
			t.Fatalf("qemu-nbd on %s did not come up: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "nbd://" + addr + "/" + export
}

// fakeLeaser records lease calls and refuses URLs in refuse.
type fakeLeaser struct {
	mu     sync.Mutex
	held   map[string]string // url -> vm
	calls  []string
	refuse map[string]bool
}

func newFakeLeaser() *fakeLeaser {
	return &fakeLeaser{held: map[string]string{}, refuse: map[string]bool{}}
}

func (f *fakeLeaser) Acquire(_ context.Context, vm, url string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "acquire "+vm+" "+url)
	if f.refuse[url] {
		return fmt.Errorf("%s is attached read-write on node n2", url)
	}
	if h, ok := f.held[url]; ok && h != vm {
		return fmt.Errorf("%s is attached read-write by vm %s", url, h)
	}
	f.held[url] = vm
	return nil
}

func (f *fakeLeaser) Release(_ context.Context, vm, url string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "release "+vm+" "+url)
	if f.held[url] == vm {
		delete(f.held, url)
	}
	return nil
}

// log returns a copy of the calls so far.
func (f *fakeLeaser) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeLeaser) heldCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

// testManager opens a Manager over a fresh short directory (unix socket
// paths are limited to 107 bytes) and destroys every VM at cleanup.
func testManager(t testing.TB, l DiskLeaser) (*Manager, string) {
	return testManagerCfg(t, Config{Leaser: l})
}

func testManagerCfg(t testing.TB, cfg Config) (*Manager, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "zvm")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dir
	m, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroyAll(t, dir); os.RemoveAll(dir) })
	t.Cleanup(func() { m.Close() }) // runs first
	return m, dir
}

// destroyAll destroys what a Manager over dir finds (so VMs of managers a
// test closed are cleaned too).
func destroyAll(t testing.TB, dir string) {
	m, err := Open(Config{Dir: dir, Accel: "tcg"})
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	ctx := context.Background()
	vms, _ := m.List(ctx)
	for _, v := range vms {
		if err := m.Destroy(ctx, v.Name); err != nil {
			t.Logf("cleanup: destroy %s: %v", v.Name, err)
		}
	}
	m.Close()
}

// consoleWaiter follows a VM's console and waits for strings in it.
type consoleWaiter struct {
	mu   sync.Mutex
	buf  strings.Builder
	wake chan struct{}
	r    io.ReadCloser
}

func followConsole(t testing.TB, m *Manager, name string) *consoleWaiter {
	t.Helper()
	r, err := m.Console(name, true)
	if err != nil {
		t.Fatal(err)
	}
	w := &consoleWaiter{wake: make(chan struct{}), r: r}
	t.Cleanup(func() { r.Close() })
	go func() {
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			w.mu.Lock()
			w.buf.WriteString(strings.ReplaceAll(line, "\r", ""))
			close(w.wake)
			w.wake = make(chan struct{})
			w.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return w
}

func (w *consoleWaiter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits (generously: TCG on a loaded machine) until the console
// holds s at least n times.
func (w *consoleWaiter) waitFor(t testing.TB, s string, n int) {
	t.Helper()
	deadline := time.After(5 * time.Minute)
	for {
		w.mu.Lock()
		got := strings.Count(w.buf.String(), s)
		wake := w.wake
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("console did not show %q %d times within 5 min; console:\n%s", s, n, w.text())
		}
	}
}
