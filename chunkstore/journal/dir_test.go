package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/zosproject/zos/chunkstore"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openDir(t testing.TB, dir string, cfg DirConfig) *Dir {
	t.Helper()
	cfg.Dir = dir
	d, err := OpenDir(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// payload is deterministic test data for (epoch, seq).
func payload(epoch, seq uint64, n int) []byte {
	r := rand.New(rand.NewPCG(epoch, seq))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func rec(epoch, seq uint64, n int) Record {
	return Record{Epoch: epoch, Seq: seq, Payload: payload(epoch, seq, n)}
}

func mustAppend(t testing.TB, l Log, name string, recs ...Record) {
	t.Helper()
	if err := l.Append(testCtx(t), name, recs[0].Epoch, recs); err != nil {
		t.Fatal(err)
	}
}

// want checks that l's records of name are exactly want, in order.
func want(t testing.TB, l Log, name string, seal uint64, want ...Record) {
	t.Helper()
	got, err := l.Read(testCtx(t), name, seal)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %s: %d records (%s), want %d (%s)", name, len(got), keys(got), len(want), keys(want))
	}
	for i := range got {
		if got[i].Epoch != want[i].Epoch || got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("read %s: record %d is %d/%d (%d bytes), want %d/%d (%d bytes)", name, i,
				got[i].Epoch, got[i].Seq, len(got[i].Payload), want[i].Epoch, want[i].Seq, len(want[i].Payload))
		}
	}
}

func keys(recs []Record) string {
	var s []string
	for _, r := range recs {
		s = append(s, fmt.Sprintf("%d/%d", r.Epoch, r.Seq))
	}
	return strings.Join(s, " ")
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		panic(err)
	}
	return pb.GetCounter().GetValue()
}

func journalPath(dir, name string) string { return filepath.Join(dir, fileBase(name)+journalExt) }

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestDirSeal(t *testing.T) {
	dir := t.TempDir()
	d := openDir(t, dir, DirConfig{})
	ctx := testCtx(t)
	mustAppend(t, d, "vd", rec(3, 1, 10))
	want(t, d, "vd", 5, rec(3, 1, 10)) // seals at 5
	err := d.Append(ctx, "vd", 4, []Record{rec(4, 1, 10)})
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "sealed at epoch 5") {
		t.Fatalf("append below the seal: %v", err)
	}
	mustAppend(t, d, "vd", rec(5, 1, 10))
	// A newer epoch's append seals implicitly.
	mustAppend(t, d, "vd", rec(7, 1, 10))
	if err := d.Append(ctx, "vd", 6, []Record{rec(6, 1, 10)}); !errors.Is(err, ErrFenced) {
		t.Fatalf("append below an implicit seal: %v", err)
	}
	// A lower seal does not lower it.
	want(t, d, "vd", 2, rec(3, 1, 10), rec(5, 1, 10), rec(7, 1, 10))
	// Sealing a journal never written fences it too.
	want(t, d, "fresh", 9)
	if err := d.Append(ctx, "fresh", 8, []Record{rec(8, 1, 1)}); !errors.Is(err, ErrFenced) {
		t.Fatalf("append to a sealed empty journal: %v", err)
	}
	// All of it survives a restart.
	d.Close()
	d = openDir(t, dir, DirConfig{})
	for name, below := range map[string]uint64{"vd": 6, "fresh": 8} {
		if err := d.Append(ctx, name, below, []Record{rec(below, 2, 1)}); !errors.Is(err, ErrFenced) {
			t.Fatalf("%s after reopen: %v", name, err)
		}
	}
	want(t, d, "vd", 0, rec(3, 1, 10), rec(5, 1, 10), rec(7, 1, 10))
}

func TestDirTrim(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	d := openDir(t, dir, DirConfig{Registry: reg})
	ctx := testCtx(t)
	hdr := int64(len(encodeHeader("vd")))

	// Every record covered: the file keeps only its header, and the seal
	// the records implied survives them.
	mustAppend(t, d, "vd", rec(4, 1, 100), rec(4, 2, 100))
	mustAppend(t, d, "vd", rec(4, 3, 100))
	if err := d.Trim(ctx, "vd", 4, 3); err != nil {
		t.Fatal(err)
	}
	if n := fileSize(t, journalPath(dir, "vd")); n != hdr {
		t.Fatalf("after a full trim the file has %d bytes, want its %d-byte header", n, hdr)
	}
	want(t, d, "vd", 0)
	if err := d.Append(ctx, "vd", 3, []Record{rec(3, 1, 1)}); !errors.Is(err, ErrFenced) {
		t.Fatalf("append below the trimmed records' epoch: %v", err)
	}

	// A small covered prefix: nothing happens (Read still returns it).
	mustAppend(t, d, "vd", rec(5, 1, 100))
	mustAppend(t, d, "vd", rec(5, 2, 100))
	mustAppend(t, d, "vd", rec(5, 3, 100))
	size := fileSize(t, journalPath(dir, "vd"))
	if err := d.Trim(ctx, "vd", 5, 1); err != nil {
		t.Fatal(err)
	}
	if n := fileSize(t, journalPath(dir, "vd")); n != size {
		t.Fatalf("a small trim changed the file: %d -> %d bytes", size, n)
	}
	want(t, d, "vd", 0, rec(5, 1, 100), rec(5, 2, 100), rec(5, 3, 100))
	// More than half of the file: rewritten.
	if err := d.Trim(ctx, "vd", 5, 2); err != nil {
		t.Fatal(err)
	}
	want(t, d, "vd", 0, rec(5, 3, 100))
	if got := value(d.m.rewrites); got != 1 {
		t.Fatalf("%v rewrites, want 1", got)
	}

	// A big covered prefix (>= 1 MiB) is rewritten even if it is less
	// than half the file.
	var big []Record
	for s := uint64(10); s < 16; s++ {
		big = append(big, rec(5, s, 400<<10))
		mustAppend(t, d, "vd", big[len(big)-1])
	}
	if err := d.Trim(ctx, "vd", 5, 12); err != nil { // 3 × 400 KiB + the 100-byte record
		t.Fatal(err)
	}
	want(t, d, "vd", 0, big[3:]...)
	if got := value(d.m.rewrites); got != 2 {
		t.Fatalf("%v rewrites, want 2", got)
	}
	// Appends go on after a rewrite, and it all survives a restart.
	mustAppend(t, d, "vd", rec(6, 1, 10))
	d.Close()
	d = openDir(t, dir, DirConfig{})
	want(t, d, "vd", 0, append(big[3:], rec(6, 1, 10))...)
	if err := d.Append(ctx, "vd", 4, []Record{rec(4, 9, 1)}); !errors.Is(err, ErrFenced) {
		t.Fatalf("append below the seal after rewrites: %v", err)
	}

	// Trim(All, All) removes the journal and its seal.
	if err := d.Trim(ctx, "vd", All, All); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != lockName {
		t.Fatalf("after Trim(All, All) the directory holds %v", ents)
	}
	want(t, d, "vd", 0)
	mustAppend(t, d, "vd", rec(1, 1, 10)) // no seal any more
	want(t, d, "vd", 0, rec(1, 1, 10))
	// Trimming a journal that does not exist is fine.
	if err := d.Trim(ctx, "nothing", 3, 3); err != nil {
		t.Fatal(err)
	}
	if err := d.Trim(ctx, "nothing", All, All); err != nil {
		t.Fatal(err)
	}
}

// TestDirTornTail: a crash mid-append leaves a partial frame or garbage at
// the end of the file; reads ignore it and the next append cuts it.
func TestDirTornTail(t *testing.T) {
	for name, damage := range map[string]func(t *testing.T, path string, lastFrame int64){
		"truncated mid-record": func(t *testing.T, path string, last int64) {
			if err := os.Truncate(path, last+30); err != nil {
				t.Fatal(err)
			}
		},
		"truncated mid-header": func(t *testing.T, path string, last int64) {
			if err := os.Truncate(path, last+5); err != nil {
				t.Fatal(err)
			}
		},
		"garbage appended": func(t *testing.T, path string, _ int64) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write(payload(99, 99, 5000))
		},
		"zeros appended": func(t *testing.T, path string, _ int64) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write(make([]byte, 8192))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			d := openDir(t, dir, DirConfig{})
			a, b, c := rec(1, 1, 300), rec(1, 2, 300), rec(1, 3, 300)
			mustAppend(t, d, "vd", a, b)
			before := fileSize(t, journalPath(dir, "vd"))
			mustAppend(t, d, "vd", c)
			d.Close()
			damage(t, journalPath(dir, "vd"), before)
			// Whether the third append survived depends on the damage;
			// the first two always do.
			d2, err := OpenDir(DirConfig{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			got, err := d2.Read(testCtx(t), "vd", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) < 2 || !bytes.Equal(got[1].Payload, b.Payload) {
				t.Fatalf("after damage: %s", keys(got))
			}
			kept := got
			e := rec(1, 4, 200)
			mustAppend(t, d2, "vd", e)
			want(t, d2, "vd", 0, append(kept, e)...)
			d2.Close()
			d3 := openDir(t, dir, DirConfig{})
			want(t, d3, "vd", 0, append(kept, e)...)
			if n := fileSize(t, journalPath(dir, "vd")); n != d3.names["vd"].end {
				t.Fatalf("file of %d bytes, its frames end at %d", n, d3.names["vd"].end)
			}
		})
	}
}

// TestDirCorrupt: damage before the tail (a good frame follows a bad one)
// is not taken for a torn tail: reads and appends fail with ErrCorrupt
// until Trim(All, All).
func TestDirCorrupt(t *testing.T) {
	dir := t.TempDir()
	d := openDir(t, dir, DirConfig{})
	ctx := testCtx(t)
	mustAppend(t, d, "vd", rec(1, 1, 300))
	mustAppend(t, d, "vd", rec(1, 2, 300))
	mustAppend(t, d, "vd", rec(1, 3, 300))
	d.Close()
	path := journalPath(dir, "vd")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(encodeHeader("vd"))+100] ^= 0x10 // in the first record's payload
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d = openDir(t, dir, DirConfig{})
	if _, err := d.Read(ctx, "vd", 0); !chunkstore.IsCorruption(err) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("read of a corrupt journal: %v", err)
	}
	if err := d.Append(ctx, "vd", 1, []Record{rec(1, 4, 1)}); !chunkstore.IsCorruption(err) {
		t.Fatalf("append to a corrupt journal: %v", err)
	}
	if err := d.Trim(ctx, "vd", All, All); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, d, "vd", rec(1, 5, 1))
	want(t, d, "vd", 0, rec(1, 5, 1))
}

// TestDirInterruptedRewrite: a rewrite that crashed before its rename
// leaves the old file and a temporary one, which OpenDir removes.
func TestDirInterruptedRewrite(t *testing.T) {
	dir := t.TempDir()
	d := openDir(t, dir, DirConfig{})
	mustAppend(t, d, "vd", rec(1, 1, 10), rec(1, 2, 10))
	d.Close()
	tmp := journalPath(dir, "vd") + tmpExt
	if err := os.WriteFile(tmp, append(encodeHeader("vd"), 1, 2, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	d = openDir(t, dir, DirConfig{})
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	want(t, d, "vd", 0, rec(1, 1, 10), rec(1, 2, 10))
}

func TestDirBadInput(t *testing.T) {
	d := openDir(t, t.TempDir(), DirConfig{NoSync: true})
	ctx := testCtx(t)
	long := strings.Repeat("x", MaxName+1)
	for what, err := range map[string]error{
		"empty name":        d.Append(ctx, "", 1, []Record{rec(1, 1, 1)}),
		"long name":         d.Append(ctx, long, 1, []Record{rec(1, 1, 1)}),
		"epoch 0":           d.Append(ctx, "vd", 0, []Record{rec(0, 1, 1)}),
		"epoch All":         d.Append(ctx, "vd", All, []Record{rec(All, 1, 1)}),
		"mixed epochs":      d.Append(ctx, "vd", 2, []Record{rec(2, 1, 1), rec(3, 2, 1)}),
		"seq not rising":    d.Append(ctx, "vd", 2, []Record{rec(2, 5, 1), rec(2, 5, 1)}),
		"no records":        d.Append(ctx, "vd", 2, nil),
		"too many records":  d.Append(ctx, "vd", 2, make([]Record, MaxRecords+1)),
		"too large":         d.Append(ctx, "vd", 2, []Record{{Epoch: 2, Seq: 1, Payload: make([]byte, MaxBytes)}}),
		"read empty name":   func() error { _, err := d.Read(ctx, "", 0); return err }(),
		"read long name":    func() error { _, err := d.Read(ctx, long, 0); return err }(),
		"trim empty name":   d.Trim(ctx, "", 1, 1),
		"seal at All":       func() error { _, err := d.Read(ctx, "vd", All); return err }(),
		"name at MaxName+1": d.Trim(ctx, long, All, All),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", what, err)
		}
	}
	mustAppend(t, d, strings.Repeat("y", MaxName), rec(1, 1, 1))
	if _, err := OpenDir(DirConfig{}); !errors.Is(err, ErrConfig) {
		t.Errorf("no Dir: %v", err)
	}
	// A second Dir on the same directory is refused.
	if _, err := OpenDir(DirConfig{Dir: d.cfg.Dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second OpenDir: %v", err)
	}
	d.Close()
	if err := d.Append(ctx, "vd", 1, []Record{rec(1, 1, 1)}); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}
}

func TestDirFull(t *testing.T) {
	d := openDir(t, t.TempDir(), DirConfig{NoSync: true})
	ctx := testCtx(t)
	p := make([]byte, 8<<20)
	for s := range uint64(5) {
		if err := d.Append(ctx, "vd", 1, []Record{{Epoch: 1, Seq: s, Payload: p}}); err != nil {
			t.Fatal(err)
		}
	}
	err := d.Append(ctx, "vd", 1, []Record{{Epoch: 1, Seq: 5, Payload: p}})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("append past MaxBytes: %v", err)
	}
	if err := d.Trim(ctx, "vd", 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := d.Append(ctx, "vd", 1, []Record{{Epoch: 1, Seq: 5, Payload: p}}); err != nil {
		t.Fatalf("append after a trim: %v", err)
	}
	got, err := d.Read(ctx, "vd", 0)
	if err != nil || len(got) != 3 || got[0].Seq != 3 {
		t.Fatalf("read: %s, %v", keys(got), err)
	}
}

func TestDirMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := openDir(t, t.TempDir(), DirConfig{Registry: reg})
	mustAppend(t, d, "vd", rec(1, 1, 1000), rec(1, 2, 24))
	if got := value(d.m.appends); got != 1 {
		t.Fatalf("appends %v", got)
	}
	if got := value(d.m.bytes); got != 1024 {
		t.Fatalf("appended bytes %v", got)
	}
	var pb dto.Metric
	if err := d.m.fsync.Write(&pb); err != nil || pb.GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("fsync histogram: %v, %v", pb.GetHistogram(), err)
	}
	d.Close()
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("metrics left registered after Close: %d", len(mfs))
	}
}

// BenchmarkDirAppend: one 64 KiB record per append, with fdatasync.
func BenchmarkDirAppend(b *testing.B) {
	BenchAppends(b, openDir(b, b.TempDir(), DirConfig{}))
}
