package flist

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"reflect"
	"testing"

	"github.com/zosproject/zos/flist/internal/memstore"
)

func smallFlist(t testing.TB) ([]byte, *memstore.Store) {
	t.Helper()
	src := t.TempDir()
	makeSourceTree(t, src)
	store := memstore.New()
	tr, err := BuildDir(context.Background(), src, &Options{Store: store, AllowDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), store
}

func listing(t testing.TB, r *Reader) []Entry {
	var out []Entry
	if err := r.Walk(func(e Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCorruptFlistRejected(t *testing.T) {
	data, _ := smallFlist(t)
	good, err := Open(context.Background(), bytes.NewReader(data), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := listing(t, good)
	good.Close()

	// Every truncation fails.
	for n := 0; n < len(data); n += 1 + n/7 {
		if r, err := Open(context.Background(), bytes.NewReader(data[:n]), int64(n), nil); err == nil {
			r.Close()
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(data))
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v is not ErrCorrupt", n, err)
		}
	}
	// Flipping any byte either fails with ErrCorrupt or (bytes no
	// checksum covers, like footer padding) changes nothing.
	rng := rand.New(rand.NewSource(2))
	accepted := 0
	for i := 0; i < len(data); i++ {
		bad := bytes.Clone(data)
		bad[i] ^= byte(1 + rng.Intn(255))
		r, err := Open(context.Background(), bytes.NewReader(bad), int64(len(bad)), nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("flip at %d: %v is not ErrCorrupt", i, err)
			}
			continue
		}
		accepted++
		if got := listing(t, r); !reflect.DeepEqual(got, want) {
			t.Fatalf("flip at %d: accepted with different content", i)
		}
		r.Close()
	}
	t.Logf("%d bytes, %d flips harmless", len(data), accepted)
	if _, err := Open(context.Background(), bytes.NewReader(nil), 0, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatal(err)
	}
}

// TestStructuralValidation writes files that are valid sstables but
// invalid flists.
func TestStructuralValidation(t *testing.T) {
	build := func(mutate func(tr *Tree)) []byte {
		tr := NewTree()
		f := &Node{Inode: Inode{Mode: TypeReg | 0o644, Size: 3}, Chunks: []Chunk{{Size: 3}}}
		tr.Put([]string{"a", "f"}, f)
		tr.Put([]string{"b"}, f)
		if mutate != nil {
			mutate(tr)
		}
		var buf bytes.Buffer
		if _, err := tr.Write(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	ok := build(nil)
	if r, err := Open(context.Background(), bytes.NewReader(ok), int64(len(ok)), nil); err != nil {
		t.Fatal(err)
	} else {
		r.Close()
	}
	// Raw records: use the sstable writer directly through rawFlist.
	cases := map[string]func(w *rawWriter){
		"dotdot-name": func(w *rawWriter) { w.dirent(RootIno, "..", 2, TypeDir) },
		"slash-name":  func(w *rawWriter) { w.dirent(RootIno, "a/b", 2, TypeDir) },
		"missing-child": func(w *rawWriter) {
			w.dirent(RootIno, "x", 9, TypeReg)
		},
		"dir-two-parents": func(w *rawWriter) {
			w.dirent(RootIno, "a", 2, TypeDir)
			w.dirent(RootIno, "b", 2, TypeDir)
		},
		"wrong-type": func(w *rawWriter) { w.dirent(RootIno, "a", 2, TypeReg) },
		"cycle": func(w *rawWriter) {
			w.dirent(2, "loop", 2, TypeDir)
		},
	}
	for name, fn := range cases {
		t.Run(name, func(t *testing.T) {
			data := rawFlist(t, fn)
			r, err := Open(context.Background(), bytes.NewReader(data), int64(len(data)), nil)
			if err == nil {
				r.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v is not ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

type rawWriter struct {
	ents [][2][]byte
}

func (w *rawWriter) dirent(parent Ino, name string, child Ino, typ uint32) {
	w.ents = append(w.ents, [2][]byte{direntKey(parent, name), encodeDirent(child, typ)})
}

// rawFlist writes root (1) and a directory (2) inode plus arbitrary
// directory entries.
func rawFlist(t testing.TB, fn func(w *rawWriter)) []byte {
	var w rawWriter
	fn(&w)
	tr := NewTree()
	tr.Put([]string{"d"}, NewDir(0o755, 0, 0, tr.Root.Mtime))
	var buf bytes.Buffer
	if _, err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Re-emit every record, replacing directory entries with ours.
	type kv struct{ k, v []byte }
	var kvs []kv
	it, _ := r.iter(nil, nil)
	for e := it.SeekGE(nil, 0); e != nil; e = it.Next() {
		if e.K.UserKey[0] == kindDirent {
			continue
		}
		v, _ := valueOf(e)
		kvs = append(kvs, kv{append([]byte(nil), e.K.UserKey...), v})
	}
	it.Close()
	for _, e := range w.ents {
		kvs = append(kvs, kv{e[0], e[1]})
	}
	sortKVs := func() {
		for i := 1; i < len(kvs); i++ {
			for j := i; j > 0 && bytes.Compare(kvs[j-1].k, kvs[j].k) > 0; j-- {
				kvs[j-1], kvs[j] = kvs[j], kvs[j-1]
			}
		}
	}
	sortKVs()
	var out bytes.Buffer
	sw := newRawSSTWriter(&out)
	for i, e := range kvs {
		if i > 0 && bytes.Equal(kvs[i-1].k, e.k) {
			continue
		}
		if err := sw.Set(e.k, e.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestMergeAndDiff(t *testing.T) {
	store := memstore.New()
	mk := func(ents ...tarEnt) *Tree {
		tr, err := BuildTar(context.Background(), bytes.NewReader(mkTar(t, ents...)), &Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	a := mk(tarEnt{name: "common/x", body: "from a"}, tarEnt{name: "only-a", body: "a"}, tarEnt{name: "f-or-d", body: "file in a"})
	b := mk(tarEnt{name: "common/x", body: "from b"}, tarEnt{name: "common/y", body: "b"}, tarEnt{name: "only-b/z", body: "b"}, tarEnt{name: "f-or-d/inner", body: "dir in b"})
	ra, _ := writeAndOpen(t, a)
	rb, _ := writeAndOpen(t, b)
	ta, _ := ra.Tree()
	tb, _ := rb.Tree()
	m, err := Merge(ta, tb)
	if err != nil {
		t.Fatal(err)
	}
	rm, _ := writeAndOpen(t, m)
	got := map[string]string{}
	rm.Walk(func(e Entry) error {
		if e.IsRegular() {
			var buf bytes.Buffer
			rm.Cat(context.Background(), store, e.Path, &buf)
			got[e.Path] = buf.String()
		}
		return nil
	})
	want := map[string]string{"common/x": "from a", "common/y": "b", "only-a": "a", "only-b/z": "b", "f-or-d": "file in a"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merge:\n got %v\nwant %v", got, want)
	}

	changes, err := Diff(ra, rb)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]ChangeKind{}
	for _, c := range changes {
		kinds[c.Path] = c.Kind
	}
	wantKinds := map[string]ChangeKind{
		"/common/x": Changed, "/common/y": Added, "/only-a": Removed, "/only-b": Added, "/only-b/z": Added,
		"/f-or-d": Changed, "/f-or-d/inner": Added,
	}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Fatalf("diff:\n got %v\nwant %v", kinds, wantKinds)
	}
	if none, _ := Diff(ra, ra); len(none) != 0 {
		t.Fatalf("self diff: %v", none)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	p := t.TempDir() + "/a.flist"
	if _, err := NewTree().WriteFile(p); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatal(st, err)
	}
}
