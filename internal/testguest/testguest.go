// Package testguest builds small Linux guests for tests that boot VMs
// under qemu (TCG is fine): the host's Debian kernel, a busybox initramfs
// that loads the virtio modules (the Debian kernel has virtio_blk as a
// module) and an ext4 root file system made with mkfs.ext4 -d. The guest's
// behaviour is chosen on the kernel command line (Cmdline).
package testguest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// virtioModules are loaded by the guest's /init, in this order.
var virtioModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
	"crc16", "crc32c_generic", "mbcache", "jbd2", "ext4", "failover", "net_failover", "virtio_net"}

// Require fails t unless the binaries are on PATH and the test runs as root.
func Require(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not found: install it (scripts/deps.sh test)", b)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
}

// Kernel finds a kernel in /boot and its module directory.
func Kernel(t testing.TB) (kernel, modDir string) {
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

// Marker returns a random marker for a guest to print.
func Marker() string { return fmt.Sprintf("m%016x", rand.Uint64()) }

// Cmdline is the kernel command line of a guest in mode (halt, wait or
// root; see guestInit) printing marker.
func Cmdline(mode, marker string) string {
	return "console=ttyS0 panic=-1 quiet loglevel=3 zos.mode=" + mode + " zos.marker=" + marker
}

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

// Initrd builds (once per test binary; Cleanup removes it) a busybox
// initramfs with the virtio modules and guestInit.
func Initrd(t testing.TB) string {
	t.Helper()
	_, modDir := Kernel(t)
	initrdOnce.Do(func() { initrdPath, initrdErr = buildInitrd(modDir) })
	if initrdErr != nil {
		t.Fatal(initrdErr)
	}
	return initrdPath
}

// Cleanup removes what Initrd built (call it from TestMain).
func Cleanup() {
	if initrdPath != "" {
		os.RemoveAll(filepath.Dir(initrdPath))
	}
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

// rootInit is /sbin/init of RootFS: it prints what an earlier boot left in
// /hello, writes this boot's marker there, syncs and powers off.
const rootInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
echo "ROOT-INIT: $($B cat /etc/hostname)"
for w in $($B cat /proc/cmdline); do case $w in zos.marker=*) M=${w#zos.marker=};; esac; done
[ -f /hello ] && echo "FOUND: $($B cat /hello)"
echo "$M" > /hello
$B sync
echo "WROTE: $M"
$B poweroff -f
`

// RootFS writes an ext4 image of sizeMB MiB to dir/root.img whose
// /sbin/init is rootInit (a busybox root; hostname zos-ext4-root) and
// returns its path.
func RootFS(t testing.TB, dir string, sizeMB int) string {
	t.Helper()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found: install busybox-static")
	}
	if err := copyFile(bb, filepath.Join(tree, "bin/busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tree, "sbin/init"), []byte(rootInit), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("zos-ext4-root\n"), 0o644)
	img := filepath.Join(dir, "root.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, "-E", "root_owner=0:0", img, fmt.Sprintf("%dM", sizeMB)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// DebugfsCat returns the content of path in the ext4 image (debugfs).
func DebugfsCat(t testing.TB, image, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, image).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// LineAfter returns the rest of the first line of s starting with prefix.
func LineAfter(s, prefix string) string {
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// PatternImage writes a sizeMB MiB raw file starting with pattern.
func PatternImage(t testing.TB, dir, name, pattern string, sizeMB int) string {
	t.Helper()
	f := filepath.Join(dir, name+".raw")
	b := make([]byte, sizeMB<<20)
	copy(b, pattern)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// NBDServe serves file (raw or qcow2) as export over qemu-nbd until the
// test ends, and returns its nbd:// URL.
func NBDServe(t testing.TB, f, format, export string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("qemu-nbd", "-f", format, "-x", export, "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-t", "-e", "8", f)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 300 {
			t.Fatalf("qemu-nbd on %s did not come up: %v: %s", addr, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "nbd://" + addr + "/" + export
}
