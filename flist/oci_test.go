package flist

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/zosproject/zos/flist/internal/memstore"
	"github.com/zosproject/zos/internal/testimage"
)

func testLayers(t testing.TB) [][]byte {
	l1 := mkTar(t,
		tarEnt{name: "bin/", typ: tar.TypeDir},
		tarEnt{name: "bin/sh", body: "#!shell"},
		tarEnt{name: "etc/", typ: tar.TypeDir},
		tarEnt{name: "etc/passwd", body: "root:x:0:0"},
		tarEnt{name: "etc/removed", body: "gone later"},
		tarEnt{name: "opaque/", typ: tar.TypeDir},
		tarEnt{name: "opaque/old1", body: "old"},
		tarEnt{name: "opaque/old2", body: "old"},
		tarEnt{name: "var/lib/data", body: "v1"},
	)
	l2 := mkTar(t,
		tarEnt{name: "etc/.wh.removed"},
		tarEnt{name: "opaque/.wh..wh..opq"},
		tarEnt{name: "opaque/new", body: "new"},
		tarEnt{name: "var/lib/data", body: "v2"},
		tarEnt{name: "app/run", body: "run"},
		tarEnt{name: "bin/ln", typ: tar.TypeLink, link: "bin/sh"},
	)
	return [][]byte{l1, l2}
}

var testCfg = testimage.Config{
	Entrypoint: []string{"/app/run"},
	Cmd:        []string{"--serve"},
	Env:        []string{"PATH=/bin", "A=b"},
	WorkingDir: "/app",
	Labels:     map[string]string{"org.zos.test": "yes"},
}

func checkImageTree(t *testing.T, tr *Tree, store *memstore.Store) {
	t.Helper()
	r, _ := writeAndOpen(t, tr)
	files := map[string]string{}
	err := r.Walk(func(e Entry) error {
		if e.IsRegular() {
			var b bytes.Buffer
			if err := r.Cat(context.Background(), store, e.Path, &b); err != nil {
				return err
			}
			files[e.Path] = b.String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"bin/sh": "#!shell", "bin/ln": "#!shell", "etc/passwd": "root:x:0:0",
		"opaque/new": "new", "var/lib/data": "v2", "app/run": "run",
	}
	if !reflect.DeepEqual(files, want) {
		t.Errorf("files:\n got %v\nwant %v", files, want)
	}
	m := r.Meta()
	if m.Image == nil || !reflect.DeepEqual(m.Image.Entrypoint, testCfg.Entrypoint) || !reflect.DeepEqual(m.Image.Cmd, testCfg.Cmd) ||
		!reflect.DeepEqual(m.Image.Env, testCfg.Env) || m.Image.WorkingDir != "/app" || m.Labels["org.zos.test"] != "yes" {
		t.Errorf("image meta %+v labels %v", m.Image, m.Labels)
	}
	sh, _ := r.Resolve("bin/sh")
	if sh.Nlink != 2 {
		t.Errorf("bin/sh nlink %d", sh.Nlink)
	}
}

func TestOCILayout(t *testing.T) {
	dir := t.TempDir()
	if _, err := testimage.WriteOCILayout(dir, testCfg, testLayers(t), "test:1"); err != nil {
		t.Fatal(err)
	}
	store := memstore.New()
	tr, kind, err := Build(context.Background(), dir, &Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if kind != KindOCILayout || tr.Meta.Source != "test:1" {
		t.Errorf("kind %s source %q", kind, tr.Meta.Source)
	}
	checkImageTree(t, tr, store)

	// The same layout as a (gzip'd) OCI archive.
	arch := filepath.Join(t.TempDir(), "img.tar")
	run(t, "tar", "-cf", arch, "-C", dir, ".")
	tr, kind, err = Build(context.Background(), arch, &Options{Store: store})
	if err != nil || kind != KindOCIArchive {
		t.Fatal(kind, err)
	}
	checkImageTree(t, tr, store)
	run(t, "gzip", arch)
	tr, kind, err = Build(context.Background(), arch+".gz", &Options{Store: store})
	if err != nil || kind != KindOCIArchive {
		t.Fatal(kind, err)
	}
	checkImageTree(t, tr, store)

	// A corrupted layer blob is refused by its digest.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs/sha256/*"))
	var layer string
	for _, b := range blobs {
		data, _ := os.ReadFile(b)
		if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
			layer = b
		}
	}
	data, _ := os.ReadFile(layer)
	// Change a byte of the gzip trailer (CRC): the content decodes but
	// the digest no longer matches.
	data[len(data)-6] ^= 1
	os.WriteFile(layer, data, 0o644)
	if _, _, err := Build(context.Background(), dir, &Options{Store: store}); !errors.Is(err, ErrBadArchive) {
		t.Fatalf("corrupt layer: %v", err)
	}
}

func TestDockerSave(t *testing.T) {
	arch, err := testimage.DockerSave(testCfg, testLayers(t), "test:latest")
	if err != nil {
		t.Fatal(err)
	}
	store := memstore.New()
	tr, kind, err := BuildStream(context.Background(), bytes.NewReader(arch), "img.tar", &Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if kind != KindDockerSave || tr.Meta.Source != "test:latest" {
		t.Errorf("kind %s source %q", kind, tr.Meta.Source)
	}
	checkImageTree(t, tr, store)

	// A layer whose bytes no longer match the config's diff_id is refused.
	bad := bytes.Replace(arch, []byte("root:x:0:0"), []byte("root:x:6:6"), 1)
	if _, _, err := BuildStream(context.Background(), bytes.NewReader(bad), "img.tar", &Options{Store: store}); !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("tampered layer: %v", err)
	}
	// Truncated archive.
	if _, _, err := BuildStream(context.Background(), bytes.NewReader(arch[:len(arch)-3000]), "img.tar", &Options{Store: store}); err == nil {
		t.Fatal("truncated docker save accepted")
	}
}
