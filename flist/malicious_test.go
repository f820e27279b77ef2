package flist

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/zosproject/zos/flist/internal/memstore"
)

type tarEnt struct {
	name, link string
	typ        byte
	body       string
}

func mkTar(t testing.TB, ents ...tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func TestMaliciousTar(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"dotdot", mkTar(t, tarEnt{name: "../evil", body: "x"}), ErrUnsafePath},
		{"dotdot-inner", mkTar(t, tarEnt{name: "a/../../evil", body: "x"}), ErrUnsafePath},
		{"absolute", mkTar(t, tarEnt{name: "/etc/passwd", body: "x"}), ErrUnsafePath},
		{"hardlink-dotdot", mkTar(t, tarEnt{name: "a", body: "x"}, tarEnt{name: "b", typ: tar.TypeLink, link: "../../etc/shadow"}), ErrUnsafePath},
		{"hardlink-absolute", mkTar(t, tarEnt{name: "b", typ: tar.TypeLink, link: "/etc/shadow"}), ErrUnsafePath},
		{"through-symlink", mkTar(t, tarEnt{name: "link", typ: tar.TypeSymlink, link: "/etc"}, tarEnt{name: "link/passwd", body: "owned"}), ErrNotDir},
		{"device", mkTar(t, tarEnt{name: "null", typ: tar.TypeChar}), ErrDeviceRefused},
		{"empty", nil, ErrBadArchive},
		{"garbage", bytes.Repeat([]byte("garbage!"), 200), ErrBadArchive},
		{"hardlink-missing", mkTar(t, tarEnt{name: "b", typ: tar.TypeLink, link: "nothere"}), ErrBadArchive},
	}
	full := mkTar(t, tarEnt{name: "dir/", typ: tar.TypeDir}, tarEnt{name: "dir/file", body: strings.Repeat("data", 5000)})
	cases = append(cases, struct {
		name string
		data []byte
		want error
	}{"truncated", full[:len(full)/2], ErrBadArchive})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(full)
	zw.Close()
	cut := gz.Bytes()[:gz.Len()*2/3]
	cases = append(cases, struct {
		name string
		data []byte
		want error
	}{"truncated-gzip", cut, ErrBadArchive})
	bad := bytes.Clone(gz.Bytes())
	bad[len(bad)/2] ^= 0x55
	cases = append(cases, struct {
		name string
		data []byte
		want error
	}{"corrupt-gzip", bad, ErrBadArchive})

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			tr, err := BuildTar(context.Background(), bytes.NewReader(tc.data), &Options{Store: store})
			if err == nil {
				t.Fatalf("accepted: %+v", tr.Meta)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			// Stream path (hub uploads) refuses the same.
			if _, _, err := BuildStream(context.Background(), bytes.NewReader(tc.data), "x", &Options{Store: store}); err == nil {
				t.Fatal("BuildStream accepted it")
			}
		})
	}
}

func TestSymlinksStoredNotFollowed(t *testing.T) {
	data := mkTar(t,
		tarEnt{name: "etc", typ: tar.TypeSymlink, link: "/etc"},
		tarEnt{name: "up", typ: tar.TypeSymlink, link: "../../../../"},
		tarEnt{name: "file", body: "hello"})
	store := memstore.New()
	tr, err := BuildTar(context.Background(), bytes.NewReader(data), &Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := writeAndOpen(t, tr)
	in, err := r.Resolve("etc")
	if err != nil || !in.IsSymlink() || in.Target != "/etc" {
		t.Fatalf("etc: %+v %v", in, err)
	}
	if _, err := r.Resolve("etc/passwd"); !errors.Is(err, ErrNotDir) {
		t.Fatalf("resolving through a symlink: %v", err)
	}
	var b bytes.Buffer
	if err := r.Cat(context.Background(), store, "file", &b); err != nil || b.String() != "hello" {
		t.Fatal(b.String(), err)
	}
}

func TestLayerReplacesTypes(t *testing.T) {
	// A later entry replaces a file by a dir and vice versa.
	data := mkTar(t,
		tarEnt{name: "a", body: "file"},
		tarEnt{name: "a/", typ: tar.TypeDir},
		tarEnt{name: "a/b", body: "inner"},
		tarEnt{name: "c/", typ: tar.TypeDir},
		tarEnt{name: "c/d", body: "x"},
		tarEnt{name: "c", body: "now a file"})
	store := memstore.New()
	tr, err := BuildTar(context.Background(), bytes.NewReader(data), &Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := writeAndOpen(t, tr)
	var b bytes.Buffer
	if err := r.Cat(context.Background(), store, "a/b", &b); err != nil || b.String() != "inner" {
		t.Fatal(b.String(), err)
	}
	b.Reset()
	if err := r.Cat(context.Background(), store, "c", &b); err != nil || b.String() != "now a file" {
		t.Fatal(b.String(), err)
	}
	_ = io.EOF
}
