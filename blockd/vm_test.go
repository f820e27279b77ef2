package blockd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// virtioModules are loaded by the guest's /init, in this order.
var virtioModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"}

// guestKernel finds a kernel in /boot and its module directory.
func guestKernel(t *testing.T) (kernel, modDir string) {
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

// buildInitramfs builds a busybox initramfs whose /init loads the virtio
// modules, prints the first sector's text, writes marker at 1 MiB of
// /dev/vda with fsync, and powers off.
func buildInitramfs(t *testing.T, modDir string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found: install busybox-static (scripts/deps.sh test)")
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755)
	for _, m := range virtioModules {
		out := filepath.Join(root, "lib/modules", m+".ko")
		matches, _ := filepath.Glob(filepath.Join(modDir, "kernel/drivers/*", m+".ko*"))
		if len(matches) == 0 {
			matches, _ = filepath.Glob(filepath.Join(modDir, "kernel/drivers/*/*", m+".ko*"))
		}
		if len(matches) == 0 {
			t.Fatalf("module %s not found under %s", m, modDir)
		}
		src := matches[0]
		switch {
		case strings.HasSuffix(src, ".xz"):
			run(t, "sh", "-c", fmt.Sprintf("xz -dc %q > %q", src, out))
		case strings.HasSuffix(src, ".zst"):
			run(t, "sh", "-c", fmt.Sprintf("zstd -qdc %q > %q", src, out))
		case strings.HasSuffix(src, ".gz"):
			run(t, "sh", "-c", fmt.Sprintf("gzip -dc %q > %q", src, out))
		default:
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(out, b, 0o644)
		}
	}
	init := `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in ` + strings.Join(virtioModules, " ") + `; do $B insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do $B sleep 0.1; i=$((i+1)); done
for w in $($B cat /proc/cmdline); do case $w in zos.marker=*) M=${w#zos.marker=};; esac; done
echo "GUEST-READ: $($B dd if=/dev/vda bs=512 count=1 2>/dev/null | $B tr -d '\000')"
echo -n "$M" | $B dd of=/dev/vda bs=512 seek=2048 conv=fsync 2>/dev/null && echo "GUEST-WROTE: $M"
$B sync
$B poweroff -f
`
	os.WriteFile(filepath.Join(root, "init"), []byte(init), 0o755)
	img := filepath.Join(dir, "initrd.gz")
	run(t, "sh", "-c", fmt.Sprintf("cd %q && find . | cpio -o -H newc --quiet | gzip -1 > %q", root, img))
	return img
}

// A VM boots with its disk on a vdisk over NBD, reads what the host wrote,
// writes a marker and powers off; the host reads the marker back through a
// clone of a snapshot.
func TestClientVMBoot(t *testing.T) {
	requireBin(t, "qemu-system-x86_64", "busybox", "cpio", "gzip", "nbdcopy", "qemu-io")
	kernel, modDir := guestKernel(t)
	initrd := buildInitramfs(t, modDir)
	e := newEnv()
	n := e.startNode(t, "n1", lo+"9", nil)
	ctx := context.Background()
	mustCreate(t, n.svc, "vm", 64*mib, 65536, "boot")
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x41 0 64", n.uri("vm")) // "AAAA…" in sector 0
	waitDetached(t, n.svc, "vm")

	marker := fmt.Sprintf("zos-vm-marker-%016x", rand.Uint64())
	qctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(qctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3 zos.marker="+marker,
		"-drive", "file="+n.uri("vm")+",format=raw,if=virtio,cache=writeback")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu: %v\n%s", err, out.String())
	}
	t.Logf("VM ran %v", time.Since(start).Round(time.Millisecond))
	console := out.String()
	if !strings.Contains(console, "GUEST-READ: "+strings.Repeat("A", 64)) {
		t.Fatalf("guest did not read the host's data:\n%s", console)
	}
	if !strings.Contains(console, "GUEST-WROTE: "+marker) {
		t.Fatalf("guest did not write the marker:\n%s", console)
	}
	waitDetached(t, n.svc, "vm")
	if _, err := n.svc.Snapshot(ctx, "vm", "after-boot"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.svc.Clone(ctx, "vm", "after-boot", "vm-copy", ""); err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(t.TempDir(), "copy.raw")
	run(t, "nbdcopy", n.uri("vm-copy"), dump)
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[mib : mib+len(marker)]); got != marker {
		t.Fatalf("clone of the snapshot holds %q at 1 MiB, want %q", got, marker)
	}
}
