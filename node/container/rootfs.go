package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountOverlay mounts lower (read-only) + upper/work (writable) on merged.
func mountOverlay(lower, upper, work, merged string) error {
	for _, d := range []string{upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("container: overlay on %s: %w", merged, err)
	}
	return nil
}

// unmount lazily unmounts p if it is a mount point; absence is fine.
func unmount(p string) error {
	err := unix.Unmount(p, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(p, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("container: umount %s: %w", p, err)
	}
	return nil
}

// isMounted reports whether p is a mount point according to /proc/self/mounts.
func isMounted(p string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[1] == p {
			return true
		}
	}
	return false
}

// prepareRoot creates, in the writable layer, what the image may lack:
// mount points /proc, /sys, /dev, and /etc/hostname, /etc/hosts and
// /etc/resolv.conf. Files the image has are left alone.
func prepareRoot(merged, hostname string, addr string, resolv []byte) error {
	for _, d := range []string{"proc", "sys", "dev", "etc", "tmp"} {
		p := filepath.Join(merged, d)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			mode := os.FileMode(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			if err := os.Mkdir(p, mode); err != nil {
				return fmt.Errorf("container: root: %w", err)
			}
			if d == "tmp" {
				os.Chmod(p, mode)
			}
		}
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if addr != "" && hostname != "" {
		hosts += addr + "\t" + hostname + "\n"
	} else if hostname != "" {
		hosts += "127.0.1.1\t" + hostname + "\n"
	}
	files := map[string][]byte{
		"etc/hostname":    []byte(hostname + "\n"),
		"etc/hosts":       []byte(hosts),
		"etc/resolv.conf": resolv,
	}
	for name, data := range files {
		p := filepath.Join(merged, name)
		// Lstat: a dangling symlink (resolv.conf -> ../run/...) counts as
		// present; writing through it could escape the root.
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("container: root: %w", err)
		}
	}
	return nil
}

// hostResolv is the host's resolv.conf without loopback name servers (they
// are not reachable from a container's namespace).
func hostResolv() []byte {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "nameserver" && (strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n"))
}
