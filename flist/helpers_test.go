package flist

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/flist/internal/memstore"
	"golang.org/x/sys/unix"
)

// makeSourceTree fills dir with every kind of entry an flist must carry.
func makeSourceTree(t testing.TB, dir string) {
	t.Helper()
	rng := rand.New(rand.NewSource(1))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, data, mode))
		must(os.Chmod(p, mode))
	}
	big := make([]byte, 9<<20+12345)
	rng.Read(big)
	write("bin/big", big, 0o755)
	write("etc/hostname", []byte("zos\n"), 0o644)
	write("etc/empty", nil, 0o600)
	write("usr/lib/lib.so", bytes.Repeat([]byte("library"), 100000), 0o755)
	write("setuid", []byte("x"), 0o4755)
	must(os.Chmod(filepath.Join(dir, "setuid"), 0o4755))
	must(os.MkdirAll(filepath.Join(dir, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(dir, "tmp"), 0o1777))
	must(os.Symlink("../etc/hostname", filepath.Join(dir, "bin/rel-link")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "abs-link")))
	must(os.Symlink("../../../../../../etc/shadow", filepath.Join(dir, "escape-link")))
	must(os.Link(filepath.Join(dir, "etc/hostname"), filepath.Join(dir, "usr/hostname-hardlink")))
	must(os.Link(filepath.Join(dir, "etc/hostname"), filepath.Join(dir, "hostname-hardlink2")))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(unix.Mknod(filepath.Join(dir, "dev-null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "dev-loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0))))
	must(os.MkdirAll(filepath.Join(dir, "home/user/empty-dir"), 0o700))
	must(os.Lchown(filepath.Join(dir, "home/user"), 1000, 1000))
	must(os.Lchown(filepath.Join(dir, "home/user/empty-dir"), 1000, 100))
	write("home/user/file", []byte("owned"), 0o640)
	must(os.Lchown(filepath.Join(dir, "home/user/file"), 1000, 1000))
	must(os.Lchown(filepath.Join(dir, "abs-link"), 12, 34))
	must(unix.Setxattr(filepath.Join(dir, "etc/hostname"), "user.zos", []byte("value"), 0))
	must(unix.Setxattr(filepath.Join(dir, "home"), "user.dir", []byte{0, 1, 2}, 0))
	write("names/with space", []byte("1"), 0o644)
	write("names/ünïcödé", []byte("2"), 0o644)
	write("names/.hidden", []byte("3"), 0o644)
	ts := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "etc/hostname"), ts, ts))
	must(unix.Lutimes(filepath.Join(dir, "abs-link"), []unix.Timeval{{Sec: 1000}, {Sec: 2000}}))
}

// srcEntry is what we compare between a source tree and an flist.
type srcEntry struct {
	Type, Mode       uint32
	UID, GID         uint32
	Size             int64
	Target           string
	SHA              string
	Rdev             uint64
	Nlink            uint32
	Mtime            time.Time
	Xattrs           string
	HardlinkIdentity uint64
}

func describeDir(t testing.TB, dir string, withMtime bool) map[string]srcEntry {
	t.Helper()
	out := map[string]srcEntry{}
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			rel = ""
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := srcEntry{Type: st.Mode & unix.S_IFMT, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
		switch e.Type {
		case unix.S_IFREG:
			e.Size = st.Size
			e.SHA = fileSHA(t, p)
			e.Nlink = uint32(st.Nlink)
		case unix.S_IFLNK:
			e.Target, _ = os.Readlink(p)
			e.Size = int64(len(e.Target))
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = st.Rdev
		}
		if withMtime && e.Type != unix.S_IFDIR {
			e.Mtime = time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UTC()
		}
		xs, _ := readXattrs(p)
		e.Xattrs = xattrString(xs)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func xattrString(xs []Xattr) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, x.Name+"="+hex.EncodeToString(x.Value))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func describeFlist(t testing.TB, r *Reader, store *memstore.Store, withMtime bool) map[string]srcEntry {
	t.Helper()
	out := map[string]srcEntry{}
	err := r.Walk(func(e Entry) error {
		s := srcEntry{Type: e.Type(), Mode: e.Mode & PermMask, UID: e.UID, GID: e.GID}
		switch e.Type() {
		case TypeReg:
			s.Size = e.Size
			h := sha256.New()
			if err := r.Cat(context.Background(), store, e.Path, h); err != nil {
				return err
			}
			s.SHA = hex.EncodeToString(h.Sum(nil))
			s.Nlink = e.Nlink
		case TypeSymlink:
			s.Target = e.Target
			s.Size = e.Size
		case TypeChar, TypeBlock:
			s.Rdev = e.Rdev
		}
		if withMtime && e.Type() != TypeDir {
			s.Mtime = e.Mtime
		}
		s.Xattrs = xattrString(e.Xattrs)
		out[e.Path] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compareTrees(t testing.TB, want, got map[string]srcEntry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("missing %q", p)
			continue
		}
		if w != g {
			t.Errorf("%q differs:\n want %+v\n  got %+v", p, w, g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("extra %q", p)
		}
	}
}

// writeAndOpen writes the tree to a file and opens it with validation.
func writeAndOpen(t testing.TB, tr *Tree) (*Reader, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.flist")
	if _, err := tr.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	r, err := OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, p
}

func needBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed (run scripts/deps.sh test): %v", name, err)
	}
	return p
}

func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}
