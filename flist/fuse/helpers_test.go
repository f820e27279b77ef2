package fuse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	"github.com/zosproject/zos/flist/internal/memstore"
	"golang.org/x/sys/unix"
)

func needBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed (run scripts/deps.sh test): %v", name, err)
	}
	return p
}

func needFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse missing: FUSE tests need it: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("FUSE mount tests need root (CI runs as root)")
	}
}

// busyboxRoot makes a small root file system: busybox and its applet
// links, plus a few files of every kind.
func busyboxRoot(t testing.TB) string {
	t.Helper()
	bb := needBinary(t, "busybox")
	dir := t.TempDir()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "dev"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("chroot", dir, "/bin/busybox", "--install", "-s").CombinedOutput()
	if err != nil {
		t.Fatalf("busybox --install: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	return dir
}

// debootstrapRoot returns a Debian minbase root file system, built once
// with debootstrap and cached in ZOS_TEST_CACHE (default
// /var/cache/zos-test); "" if it cannot be built (no mirror reachable).
func debootstrapRoot(t testing.TB) string {
	t.Helper()
	base := os.Getenv("ZOS_TEST_CACHE")
	if base == "" {
		base = "/var/cache/zos-test"
	}
	dir := filepath.Join(base, "bookworm-minbase")
	if _, err := os.Stat(filepath.Join(dir, "bin/sh")); err == nil {
		return dir
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Logf("debootstrap not installed; using busybox tree")
		return ""
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	t.Logf("running debootstrap --variant=minbase bookworm (once, cached in %s)", base)
	cmd := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, "http://deb.debian.org/debian")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("debootstrap failed, using busybox tree: %v\n%s", err, tail(string(out), 2000))
		os.RemoveAll(tmp)
		return ""
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// entry describes one path for comparing trees.
type entry struct {
	Type, Mode, UID, GID uint32
	Size                 int64
	Target, SHA, Xattrs  string
	Rdev                 uint64
	Mtime                int64
}

func describe(t testing.TB, dir string, content bool) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{Type: st.Mode & unix.S_IFMT, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		switch e.Type {
		case unix.S_IFREG:
			e.Size = st.Size
			if content {
				e.SHA = sha(t, p)
			}
			e.Mtime = st.Mtim.Nano()
		case unix.S_IFLNK:
			e.Target, _ = os.Readlink(p)
			e.Size = st.Size
			e.Mtime = st.Mtim.Nano()
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = st.Rdev
		}
		e.Xattrs = xattrs(p)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func xattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var parts []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			parts = append(parts, name+"=ERR")
			continue
		}
		parts = append(parts, name+"="+hex.EncodeToString(v[:m]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func sha(t testing.TB, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func compare(t testing.TB, want, got map[string]entry) {
	t.Helper()
	bad := 0
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("missing %q", p)
		} else if w != g {
			t.Errorf("%q differs:\n want %+v\n  got %+v", p, w, g)
		} else {
			continue
		}
		if bad++; bad > 20 {
			t.Fatal("too many differences")
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("extra %q", p)
		}
	}
}

type fixture struct {
	store *memstore.Store
	r     *flist.Reader
	cache *cache.Cache
}

// build builds src into an flist backed by a memory store.
func build(t testing.TB, src string) *fixture {
	t.Helper()
	store := memstore.New()
	tr, _, err := flist.Build(context.Background(), src, &flist.Options{Store: store, AllowDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.flist")
	if _, err := tr.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	r, err := flist.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &fixture{store: store, r: r}
}

func (fx *fixture) withCache(t testing.TB, max int64) *fixture {
	t.Helper()
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fx.cache = c
	return fx
}

func (fx *fixture) mount(t testing.TB, cfg Config) *Mounted {
	t.Helper()
	needFUSE(t)
	if cfg.Mountpoint == "" {
		cfg.Mountpoint = filepath.Join(t.TempDir(), "mnt")
	}
	cfg.Flist = fx.r
	if cfg.Store == nil {
		cfg.Store = fx.store
	}
	if cfg.Cache == nil {
		cfg.Cache = fx.cache
	}
	m, err := Mount(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.Unmount(ctx); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return m
}

func isErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }
