// Package testguest wraps package guest for tests: the guest kernel, the
// busybox initramfs (built once per test binary; Cleanup removes it) and
// the ext4 root, failing the test on errors, plus a qemu-nbd server and
// small helpers.
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

	"github.com/zosproject/zos/internal/guest"
)

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
	k, m, err := guest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	return k, m
}

var (
	initrdOnce sync.Once
	initrdPath string
	initrdErr  error
)

// Marker returns a random marker for a guest to print.
func Marker() string { return fmt.Sprintf("m%016x", rand.Uint64()) }

// Cmdline is guest.Cmdline.
func Cmdline(mode, marker string) string { return guest.Cmdline(mode, marker) }

// Initrd builds (once per test binary; Cleanup removes it) a busybox
// initramfs with the virtio modules and guestInit.
func Initrd(t testing.TB) string {
	t.Helper()
	_, modDir := Kernel(t)
	initrdOnce.Do(func() { initrdPath, initrdErr = guest.BuildInitrd(modDir) })
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

// RootFS is guest.RootFS (an ext4 busybox root whose init writes /hello
// and powers off).
func RootFS(t testing.TB, dir string, sizeMB int) string {
	t.Helper()
	img, err := guest.RootFS(dir, sizeMB)
	if err != nil {
		t.Fatal(err)
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
