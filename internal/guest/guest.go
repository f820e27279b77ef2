// Package guest builds a small Linux guest for VMs booted under qemu (TCG
// is fine): the host's Debian kernel, a busybox initramfs that loads the
// virtio modules (the Debian kernel has virtio_blk as a module) and an ext4
// root file system made with mkfs.ext4 -d. The guest's behaviour is chosen
// on the kernel command line (Cmdline). The tests (internal/testguest) and
// `zos bench vm` boot it.
package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// virtioModules are loaded by the guest's /init, in this order.
var virtioModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
	"crc16", "crc32c_generic", "mbcache", "jbd2", "ext4", "failover", "net_failover", "virtio_net"}

// Kernel finds a kernel in /boot and its module directory.
func Kernel() (kernel, modDir string, err error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	for _, k := range ks {
		ver := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if st, err := os.Stat(filepath.Join("/lib/modules", ver)); err == nil && st.IsDir() {
			return k, filepath.Join("/lib/modules", ver), nil
		}
	}
	return "", "", fmt.Errorf("no /boot/vmlinuz-* with modules in /lib/modules: install linux-image-amd64 (scripts/deps.sh test)")
}

// Cmdline is the kernel command line of a guest in mode (halt, wait or
// root; see guestInit) printing marker.
func Cmdline(mode, marker string) string {
	return "console=ttyS0 panic=-1 quiet loglevel=3 zos.mode=" + mode + " zos.marker=" + marker
}

// guestInit is the guest's /init. It prints ZOS-BOOT <marker>, its virtio
// disks and the first 64 bytes of /dev/vda (with zos.ip=CIDR and
// zos.peer=IP it first configures eth0 and pings the peer, and with
// zos.listen=PORT answers "ZOS-NC <marker>" to every TCP connection on
// PORT); with zos.mode=halt it powers
// off; with zos.mode=root it mounts /dev/vda (ext4) and switch_roots to its
// /sbin/init; else it polls /sys/block and prints every change (DISKS: …)
// and the pattern of a new vdb (VDB: …). It has no ACPI handling: a power
// button press does nothing.
const guestInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in MODULES; do $B insmod /lib/modules/$m.ko 2>/dev/null || echo "insmod $m failed"; done
for w in $($B cat /proc/cmdline); do case $w in zos.marker=*) M=${w#zos.marker=};; zos.mode=*) MODE=${w#zos.mode=};; zos.ip=*) IP=${w#zos.ip=};; zos.peer=*) PEER=${w#zos.peer=};; zos.listen=*) LISTEN=${w#zos.listen=};; esac; done
echo 1 > /proc/sys/kernel/ctrl-alt-del
echo "ZOS-BOOT $M"
if [ -n "$IP" ]; then
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do $B sleep 0.1; i=$((i+1)); done
  $B ip link set lo up; $B ip addr add $IP dev eth0; $B ip link set eth0 up
  if $B ping -c 1 -W 2 $PEER >/dev/null 2>&1 || $B ping -c 3 -W 5 $PEER >/dev/null 2>&1; then echo "PING-OK $PEER"; else echo "PING-FAILED $PEER"; fi
  if [ -n "$LISTEN" ]; then $B nc -ll -p $LISTEN -e $B echo "ZOS-NC $M" & echo "LISTENING $LISTEN"; fi
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

// BuildInitrd builds the busybox initramfs with the modules of modDir
// and guestInit in a new temporary directory, and returns its path (the
// caller removes filepath.Dir of it).
func BuildInitrd(modDir string) (string, error) {
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
func RootFS(dir string, sizeMB int) (string, error) {
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return "", err
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox not found: install busybox-static")
	}
	if err := copyFile(bb, filepath.Join(tree, "bin/busybox"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tree, "sbin/init"), []byte(rootInit), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("zos-ext4-root\n"), 0o644); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "root.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, "-E", "root_owner=0:0", img, fmt.Sprintf("%dM", sizeMB)).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	return img, nil
}
