package flist

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosproject/zos/flist/internal/memstore"
	"github.com/zosproject/zos/internal/testimage"
)

// FuzzOpen: the decoder never panics or hangs, and whatever it accepts can
// be walked and re-encoded.
func FuzzOpen(f *testing.F) {
	data, _ := smallFlist(f)
	f.Add(data)
	var buf bytes.Buffer
	NewTree().Write(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("not an flist"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Open(context.Background(), bytes.NewReader(data), int64(len(data)), nil)
		if err != nil {
			return
		}
		defer r.Close()
		if err := r.Walk(func(e Entry) error {
			if e.IsRegular() {
				_, err := r.Chunks(e.Ino)
				return err
			}
			return nil
		}); err != nil {
			t.Fatalf("validated file fails to walk: %v", err)
		}
		tr, err := r.Tree()
		if err != nil {
			t.Fatalf("validated file fails to load: %v", err)
		}
		var out bytes.Buffer
		if _, err := tr.Write(&out); err != nil {
			t.Fatalf("validated file fails to re-encode: %v", err)
		}
	})
}

// FuzzBuildTar: tar ingestion refuses or accepts, never panics, and what it
// accepts is a valid flist with no unsafe names.
func FuzzBuildTar(f *testing.F) {
	f.Add(mkTar(f, tarEnt{name: "a/b", body: "x"}, tarEnt{name: "l", typ: tar.TypeSymlink, link: "../x"}, tarEnt{name: "h", typ: tar.TypeLink, link: "a/b"}))
	f.Add(mkTar(f, tarEnt{name: "../x", body: "x"}))
	f.Add(mkTar(f, tarEnt{name: "d/", typ: tar.TypeDir}, tarEnt{name: "d", body: "file"}))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		store := memstore.New()
		tr, err := BuildTar(context.Background(), bytes.NewReader(data), &Options{Store: store, AllowDevices: true, Concurrency: 1})
		if err != nil {
			return
		}
		checkBuilt(t, tr)
	})
}

// FuzzBuildImage: image ingestion (docker save and OCI archives) never
// panics and yields valid flists.
func FuzzBuildImage(f *testing.F) {
	arch, err := testimage.DockerSave(testCfg, testLayers(f), "t:1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(arch)
	// An OCI archive (an OCI layout as a tar).
	dir := f.TempDir()
	if _, err := testimage.WriteOCILayout(dir, testCfg, testLayers(f), "t:1"); err != nil {
		f.Fatal(err)
	}
	f.Add(tarDir(f, dir))
	f.Add(mkTar(f, tarEnt{name: "manifest.json", body: `[{"Config":"c.json","Layers":["l.tar"]}]`}, tarEnt{name: "c.json", body: `{}`}, tarEnt{name: "l.tar", body: ""}))
	f.Add(mkTar(f, tarEnt{name: "oci-layout", body: `{}`}, tarEnt{name: "index.json", body: `{"manifests":[{"digest":"sha256:` + string(bytes.Repeat([]byte("a"), 64)) + `"}]}`}))
	f.Fuzz(func(t *testing.T, data []byte) {
		store := memstore.New()
		tr, _, err := BuildStream(context.Background(), bytes.NewReader(data), "fuzz", &Options{Store: store, TempDir: t.TempDir(), Concurrency: 1})
		if err != nil {
			return
		}
		checkBuilt(t, tr)
	})
}

func checkBuilt(t *testing.T, tr *Tree) {
	var buf bytes.Buffer
	if _, err := tr.Write(&buf); err != nil {
		t.Fatalf("built tree does not encode: %v", err)
	}
	r, err := Open(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil)
	if err != nil {
		t.Fatalf("built flist does not validate: %v", err)
	}
	r.Close()
}

// tarDir archives a directory's regular files (enough for an OCI layout).
func tarDir(t testing.TB, dir string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}
