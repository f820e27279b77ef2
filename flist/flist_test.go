package flist

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosproject/zos/flist/internal/memstore"
)

func TestBuildDirRoundTrip(t *testing.T) {
	src := t.TempDir()
	makeSourceTree(t, src)
	store := memstore.New()
	tr, err := BuildDir(context.Background(), src, &Options{Store: store, AllowDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := writeAndOpen(t, tr)
	compareTrees(t, describeDir(t, src, true), describeFlist(t, r, store, true))

	// Hard links share one inode with nlink 3.
	a, err := r.Resolve("/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Resolve("usr/hostname-hardlink")
	if err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 3 {
		t.Errorf("hard links: inos %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if got := a.Mtime.Nanosecond(); got != 123456789 {
		t.Errorf("mtime ns = %d", got)
	}
	big, _ := r.Resolve("bin/big")
	chunks, _ := r.Chunks(big.Ino)
	if len(chunks) < 3 {
		t.Errorf("9 MiB file cut into %d chunks", len(chunks))
	}
	st := r.Meta().Stats
	if st.Devices != 2 || st.Symlinks != 3 || st.HardLinks != 2 || st.Others != 1 {
		t.Errorf("stats %+v", st)
	}
	if r.Meta().Chunking != DefaultChunking.Name() {
		t.Errorf("chunking %q", r.Meta().Chunking)
	}
}

func TestDevicesRefused(t *testing.T) {
	src := t.TempDir()
	makeSourceTree(t, src)
	_, err := BuildDir(context.Background(), src, &Options{Store: memstore.New()})
	if !errors.Is(err, ErrDeviceRefused) {
		t.Fatalf("err = %v, want ErrDeviceRefused", err)
	}
}

func TestTarRoundTrip(t *testing.T) {
	needBinary(t, "tar")
	src := t.TempDir()
	makeSourceTree(t, src)
	dir := t.TempDir()
	plain := filepath.Join(dir, "root.tar")
	run(t, "tar", "--xattrs", "--xattrs-include=*", "--format=posix", "--numeric-owner", "-cpf", plain, "-C", src, ".")
	want := describeDir(t, src, false)
	for _, tc := range []struct{ name, cmd string }{{"tar", ""}, {"tar.gz", "gzip"}, {"tar.zst", "zstd"}} {
		t.Run(tc.name, func(t *testing.T) {
			p := plain
			if tc.cmd != "" {
				needBinary(t, tc.cmd)
				p = filepath.Join(dir, "root."+tc.name)
				out := run(t, tc.cmd, "-c", plain)
				if err := os.WriteFile(p, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			store := memstore.New()
			var progressed int
			tr, kind, err := Build(context.Background(), p, &Options{Store: store, AllowDevices: true, Progress: func(Progress) { progressed++ }})
			if err != nil {
				t.Fatal(err)
			}
			if kind != KindTar {
				t.Errorf("kind %s", kind)
			}
			if progressed == 0 {
				t.Error("no progress reported")
			}
			r, _ := writeAndOpen(t, tr)
			compareTrees(t, want, describeFlist(t, r, store, false))
		})
	}
}

func TestStoredFlist(t *testing.T) {
	src := t.TempDir()
	makeSourceTree(t, src)
	store := memstore.New()
	tr, err := BuildDir(context.Background(), src, &Options{Store: store, AllowDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	ref, size, meta, err := Put(context.Background(), store, tr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := OpenStored(context.Background(), store, ref)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != size || r.Meta().Stats != meta.Stats {
		t.Errorf("size %d/%d stats %+v/%+v", r.Size(), size, r.Meta().Stats, meta.Stats)
	}
	var buf bytes.Buffer
	if err := r.Cat(context.Background(), store, "/etc/hostname", &buf); err != nil || buf.String() != "zos\n" {
		t.Errorf("cat: %q %v", buf.String(), err)
	}
}
