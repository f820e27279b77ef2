package fuse

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	"github.com/zosproject/zos/internal/testimage"
	"golang.org/x/sys/unix"
)

// richTree adds every inode kind to a busybox root.
func richTree(t testing.TB) string {
	dir := busyboxRoot(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 7<<20+333)
	rand.New(rand.NewSource(7)).Read(big)
	must(os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o640))
	must(os.Lchown(filepath.Join(dir, "big.bin"), 1001, 1002))
	must(os.WriteFile(filepath.Join(dir, "etc/motd"), []byte("hello from zos\n"), 0o644))
	must(os.Link(filepath.Join(dir, "etc/motd"), filepath.Join(dir, "motd-link")))
	must(unix.Setxattr(filepath.Join(dir, "etc/motd"), "user.zos.test", []byte("xattr-value"), 0))
	must(unix.Setxattr(filepath.Join(dir, "etc"), "user.dir", []byte("d"), 0))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	must(unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(os.Symlink("/etc/motd", filepath.Join(dir, "abs-link")))
	must(os.Symlink("../../../../outside", filepath.Join(dir, "escape")))
	must(os.WriteFile(filepath.Join(dir, "suid"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(dir, "suid"), 0o4755))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	ts := time.Date(2020, 1, 2, 3, 4, 5, 987654321, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "etc/motd"), ts, ts))
	return dir
}

func TestMountBusyboxTree(t *testing.T) {
	src := richTree(t)
	fx := build(t, src).withCache(t, 256<<20)
	m := fx.mount(t, Config{})
	compare(t, describe(t, src, true), describe(t, m.Dir(), true))

	out, err := exec.Command("chroot", m.Dir(), "/bin/busybox", "echo", "hi").CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("chroot busybox echo: %q %v", out, err)
	}
	out, err = exec.Command("chroot", m.Dir(), "/bin/sh", "-c", "cat /etc/motd; ls /bin | wc -l").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hello from zos\n") {
		t.Fatalf("chroot sh: %q %v", out, err)
	}
}

func TestPosix(t *testing.T) {
	src := richTree(t)
	fx := build(t, src).withCache(t, 256<<20)
	m := fx.mount(t, Config{})
	mnt := m.Dir()

	// readdir
	want, _ := os.ReadDir(src)
	got, err := os.ReadDir(mnt)
	if err != nil || len(got) != len(want) {
		t.Fatalf("readdir: %d vs %d entries, %v", len(got), len(want), err)
	}
	for i := range want {
		if got[i].Name() != want[i].Name() || got[i].Type() != want[i].Type() {
			t.Errorf("entry %d: %s %v vs %s %v", i, got[i].Name(), got[i].Type(), want[i].Name(), want[i].Type())
		}
	}
	// stat: hard links share the inode and count links.
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(mnt, "etc/motd"), &a)
	unix.Lstat(filepath.Join(mnt, "motd-link"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: ino %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if a.Mtim.Nsec != 987654321 || a.Mtim.Sec != time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).Unix() {
		t.Errorf("mtime %v", a.Mtim)
	}
	var d unix.Stat_t
	unix.Lstat(filepath.Join(mnt, "dev/null"), &d)
	if d.Mode&unix.S_IFMT != unix.S_IFCHR || d.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("device: mode %o rdev %x", d.Mode, d.Rdev)
	}
	var dir unix.Stat_t
	unix.Stat(filepath.Join(mnt, "etc"), &dir)
	if dir.Nlink != 2 {
		t.Errorf("dir nlink %d", dir.Nlink)
	}
	// read at offsets
	orig, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	f, err := os.Open(filepath.Join(mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		off := rng.Int63n(int64(len(orig)))
		n := 1 + rng.Intn(3<<20)
		buf := make([]byte, n)
		k, err := f.ReadAt(buf, off)
		if want := min(int64(n), int64(len(orig))-off); int64(k) != want || (err != nil && k != n && k == 0) {
			t.Fatalf("pread %d@%d: %d %v", n, off, k, err)
		}
		if !bytes.Equal(buf[:k], orig[off:off+int64(k)]) {
			t.Fatalf("pread %d@%d: wrong bytes", n, off)
		}
	}
	f.Close()
	// concurrent readers
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, err := os.ReadFile(filepath.Join(mnt, "big.bin"))
			if err != nil || !bytes.Equal(data, orig) {
				t.Errorf("concurrent read: %v", err)
			}
		}()
	}
	wg.Wait()
	// xattrs
	buf := make([]byte, 64)
	n, err := unix.Getxattr(filepath.Join(mnt, "etc/motd"), "user.zos.test", buf)
	if err != nil || string(buf[:n]) != "xattr-value" {
		t.Errorf("getxattr: %q %v", buf[:n], err)
	}
	if _, err := unix.Getxattr(filepath.Join(mnt, "etc/motd"), "user.none", buf); !isErrno(err, unix.ENODATA) {
		t.Errorf("missing xattr: %v", err)
	}
	if _, err := unix.Getxattr(filepath.Join(mnt, "etc/motd"), "user.zos.test", make([]byte, 2)); !isErrno(err, unix.ERANGE) {
		t.Errorf("small buffer: %v", err)
	}
	// symlinks are served, never followed out of the mount
	if target, _ := os.Readlink(filepath.Join(mnt, "escape")); target != "../../../../outside" {
		t.Errorf("readlink %q", target)
	}
	// writes are refused
	for name, fn := range map[string]func() error{
		"create":   func() error { return os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644) },
		"write":    func() error { return os.WriteFile(filepath.Join(mnt, "etc/motd"), []byte("x"), 0o644) },
		"mkdir":    func() error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) },
		"unlink":   func() error { return os.Remove(filepath.Join(mnt, "etc/motd")) },
		"rename":   func() error { return os.Rename(filepath.Join(mnt, "etc/motd"), filepath.Join(mnt, "x")) },
		"chmod":    func() error { return os.Chmod(filepath.Join(mnt, "etc/motd"), 0o777) },
		"chown":    func() error { return os.Chown(filepath.Join(mnt, "etc/motd"), 5, 5) },
		"symlink":  func() error { return os.Symlink("x", filepath.Join(mnt, "sl")) },
		"setxattr": func() error { return unix.Setxattr(filepath.Join(mnt, "etc/motd"), "user.x", []byte("y"), 0) },
		"truncate": func() error { return os.Truncate(filepath.Join(mnt, "etc/motd"), 0) },
	} {
		if err := fn(); !isErrno(err, unix.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: %+v %v", sfs.Flags, err)
	}
}

func TestMountOCILayout(t *testing.T) {
	needBinary(t, "tar")
	root := richTree(t)
	// Layer 1: the busybox tree; layer 2 deletes etc/motd (whiteout) and
	// adds a file.
	layer1, err := exec.Command("tar", "--xattrs", "--format=posix", "--numeric-owner", "-cf", "-", "-C", root, ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	l2dir := t.TempDir()
	os.MkdirAll(filepath.Join(l2dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(l2dir, "etc/.wh.motd"), nil, 0o644)
	os.WriteFile(filepath.Join(l2dir, "etc/added"), []byte("layer 2\n"), 0o644)
	layer2, err := exec.Command("tar", "--format=posix", "--numeric-owner", "-cf", "-", "-C", l2dir, ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	oci := t.TempDir()
	cfg := testimage.Config{Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "echo hi"}, Env: []string{"PATH=/bin"}, WorkingDir: "/"}
	if _, err := testimage.WriteOCILayout(oci, cfg, [][]byte{layer1, layer2}, "bb:1"); err != nil {
		t.Fatal(err)
	}
	fx := build(t, oci).withCache(t, 256<<20)
	if img := fx.r.Meta().Image; img == nil || img.Entrypoint[0] != "/bin/sh" {
		t.Fatalf("image config %+v", img)
	}
	m := fx.mount(t, Config{})
	// Expected: the source tree as applied by the kernel semantics.
	exp := t.TempDir() + "/exp"
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("cp", "-a", root, exp)
	os.Remove(filepath.Join(exp, "etc/motd"))
	os.WriteFile(filepath.Join(exp, "etc/added"), []byte("layer 2\n"), 0o644)
	want := describe(t, exp, true)
	got := describe(t, m.Dir(), true)
	// Directory attributes come from the last layer that has them;
	// compare content and types only for etc/.
	delete(want, "etc")
	delete(got, "etc")
	delete(want, ".")
	delete(got, ".")
	for p, e := range want {
		e.Mtime = 0
		want[p] = e
	}
	for p, e := range got {
		e.Mtime = 0
		got[p] = e
	}
	compare(t, want, got)
	out, err := exec.Command("chroot", m.Dir(), "/bin/busybox", "echo", "hi").CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("chroot: %q %v", out, err)
	}
}

func TestCacheBound(t *testing.T) {
	src := t.TempDir()
	const size = 200 << 20
	data := make([]byte, size)
	rand.New(rand.NewSource(3)).Read(data)
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	data = nil
	fx := build(t, src).withCache(t, 16<<20)
	m := fx.mount(t, Config{MemoryBytes: 8 << 20})
	stop := make(chan struct{})
	var over error
	var mon sync.WaitGroup
	mon.Add(1)
	go func() {
		defer mon.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if u, err := cache.DiskUsage(fx.cache.Dir()); err == nil && u > 16<<20 && over == nil {
				over = errorf("cache holds %d bytes, bound 16 MiB", u)
			}
		}
	}()
	got := sha(t, filepath.Join(m.Dir(), "big"))
	close(stop)
	mon.Wait()
	if over != nil {
		t.Fatal(over)
	}
	if got != hexs(want[:]) {
		t.Fatal("content differs")
	}
	if u, _ := cache.DiskUsage(fx.cache.Dir()); u == 0 || u > 16<<20 {
		t.Fatalf("cache usage %d", u)
	}
}

func TestStoreUnreachableEIO(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("x"), 100000), 0o644)
	fx := build(t, src)
	fx.store.Down.Store(true)
	const timeout = 2 * time.Second
	m := fx.mount(t, Config{FetchTimeout: timeout})
	start := time.Now()
	_, err := os.ReadFile(filepath.Join(m.Dir(), "f"))
	el := time.Since(start)
	if !isErrno(err, unix.EIO) {
		t.Fatalf("read with the store down: %v, want EIO", err)
	}
	if el < timeout || el > timeout+30*time.Second {
		t.Fatalf("EIO after %v, timeout %v", el, timeout)
	}
	// Metadata stays available, and the store coming back heals reads.
	if _, err := os.Stat(filepath.Join(m.Dir(), "f")); err != nil {
		t.Fatal(err)
	}
	fx.store.Down.Store(false)
	if data, err := os.ReadFile(filepath.Join(m.Dir(), "f")); err != nil || len(data) != 100000 {
		t.Fatalf("after recovery: %d %v", len(data), err)
	}
}

func errorf(format string, args ...any) error { return &strErr{s: sprintf(format, args...)} }

type strErr struct{ s string }

func (e *strErr) Error() string { return e.s }

var _ = context.Background
var _ = flist.RootIno
