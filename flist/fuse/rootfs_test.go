package fuse

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostRoot is the fallback "realistic" tree when debootstrap cannot run:
// busybox plus copies of the host's /etc and /usr/lib/x86_64-linux-gnu.
func hostRoot(t *testing.T) string {
	dir := busyboxRoot(t)
	for _, p := range []string{"/etc", "/usr/lib/x86_64-linux-gnu"} {
		dst := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if out, err := exec.Command("cp", "-a", p, filepath.Dir(dst)).CombinedOutput(); err != nil {
			t.Logf("copy %s: %v %s", p, err, out)
		}
	}
	return dir
}

// TestMountRootfs builds an flist from a real Debian root file system
// (debootstrap --variant=minbase bookworm, cached between runs), mounts it,
// compares every path, and runs programs from it in a chroot.
func TestMountRootfs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and compares a whole root file system")
	}
	needFUSE(t)
	root := debootstrapRoot(t)
	debian := root != ""
	if !debian {
		root = hostRoot(t)
	}
	fx := build(t, root).withCache(t, 1<<30)
	m := fx.mount(t, Config{})
	want := describe(t, root, true)
	got := describe(t, m.Dir(), true)
	compare(t, want, got)
	t.Logf("compared %d paths", len(want))
	if debian {
		out, err := exec.Command("chroot", m.Dir(), "/bin/sh", "-c", "echo hi; /usr/bin/dpkg-query -W | wc -l").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "hi\n") {
			t.Fatalf("chroot: %q %v", out, err)
		}
		t.Logf("packages in the mounted tree: %s", strings.TrimSpace(strings.TrimPrefix(string(out), "hi\n")))
	} else {
		out, err := exec.Command("chroot", m.Dir(), "/bin/busybox", "echo", "hi").CombinedOutput()
		if err != nil || string(out) != "hi\n" {
			t.Fatalf("chroot: %q %v", out, err)
		}
	}
	// The writable overlay on a real root: a package-manager-like write.
	rw := fx.mount(t, Config{RW: true})
	out, err := exec.Command("chroot", rw.Dir(), "/bin/sh", "-c", "echo zos > /etc/hostname && cat /etc/hostname").CombinedOutput()
	if err != nil || string(out) != "zos\n" {
		t.Fatalf("chroot rw: %q %v", out, err)
	}
}
