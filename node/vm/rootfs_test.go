package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// rootInit is /sbin/init of the ext4 root file system: it prints what an
// earlier boot left in /hello, writes this boot's marker there, syncs and
// powers off.
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

// A VM whose vdisk holds a real ext4 root file system (mkfs.ext4 -d) boots
// the host's kernel, mounts /dev/vda as its root, writes a file, syncs and
// powers off; after Destroy the file is in the disk image (read with
// debugfs). A second VM boots from a copy-on-write clone of that image (a
// qcow2 overlay: O(1), the template untouched), finds the first VM's file
// and overwrites it in the clone only.
func TestExt4RootFromDisk(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "qemu-img", "busybox", "cpio", "mkfs.ext4", "debugfs")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, _ := exec.LookPath("busybox")
	if err := exec.Command("cp", bb, filepath.Join(tree, "bin/busybox")).Run(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tree, "sbin/init"), []byte(rootInit), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("zos-ext4-root\n"), 0o644)
	img := filepath.Join(dir, "root.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, "-E", "root_owner=0:0", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	leases := newFakeLeaser()
	m, _ := testManager(t, leases)
	ctx := context.Background()

	boot := func(name, url string) string {
		t.Helper()
		mk := marker()
		if _, err := m.Create(ctx, guestSpec(t, name, "root", mk, Media{URL: url})); err != nil {
			t.Fatal(err)
		}
		waitStopped(t, m, name)
		c := readConsole(t, m, name)
		if !strings.Contains(c, "ROOT-INIT: zos-ext4-root") || !strings.Contains(c, "WROTE: "+mk) {
			t.Fatalf("%s did not boot from its ext4 root:\n%s", name, c)
		}
		if err := m.Destroy(ctx, name); err != nil {
			t.Fatal(err)
		}
		return c
	}
	hello := func(image string) string {
		t.Helper()
		out, err := exec.Command("debugfs", "-R", "cat /hello", image).Output()
		if err != nil {
			t.Fatalf("debugfs: %v", err)
		}
		return strings.TrimSpace(string(out))
	}

	c1 := boot("root1", nbdServe(t, img, "raw", "root"))
	wrote1 := lineAfter(c1, "WROTE: ")
	if got := hello(img); got != wrote1 {
		t.Fatalf("/hello in the image after destroy = %q, want %q", got, wrote1)
	}

	clone := filepath.Join(dir, "clone.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "raw", clone).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	c2 := boot("root2", nbdServe(t, clone, "qcow2", "clone"))
	if !strings.Contains(c2, "FOUND: "+wrote1) {
		t.Fatalf("the clone's guest did not find the template's file:\n%s", c2)
	}
	if got := hello(img); got != wrote1 {
		t.Fatalf("booting the clone changed the template: /hello = %q", got)
	}
	if leases.heldCount() != 0 {
		t.Fatalf("leases: %v", leases.log())
	}
}

func lineAfter(s, prefix string) string {
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
