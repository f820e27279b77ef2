package journaltest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore/journal"
)

// Harness is one Log under test and what the suite may do to it.
type Harness struct {
	Log journal.Log
	// Restart, if set, stops Log and whatever serves it as a crash would
	// (its files stay), calls crash (if not nil) with the file system and
	// directory of every journal.Dir holding its journals while they are
	// down, starts them again and returns the Log.
	Restart func(t *testing.T, crash func(fs vfs.FS, dir string)) journal.Log
}

// Run runs the suite against Logs made by newLog.
func Run(t *testing.T, newLog func(t *testing.T) Harness) {
	t.Helper()
	tests := []struct {
		name    string
		fn      func(t *testing.T, h Harness)
		restart bool
	}{
		{"AppendRead", testAppendRead, false},
		{"LargeRecord", testLargeRecord, false},
		{"Fencing", testFencing, false},
		{"Trim", testTrim, false},
		{"Full", testFull, false},
		{"BadInput", testBadInput, false},
		{"Concurrent", func(t *testing.T, h Harness) { Concurrent(t, h.Log, 6) }, false},
		{"Restart", testRestart, true},
		{"TornTail", testTornTail, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newLog(t)
			if tc.restart && h.Restart == nil {
				t.Skip("the Log cannot be restarted")
			}
			tc.fn(t, h)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Rec is a record of n deterministic bytes for (epoch, seq).
func Rec(epoch, seq uint64, n int) journal.Record {
	r := rand.New(rand.NewPCG(epoch, seq))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return journal.Record{Epoch: epoch, Seq: seq, Payload: p}
}

func mustAppend(t *testing.T, l journal.Log, name string, recs ...journal.Record) {
	t.Helper()
	if err := l.Append(ctx(t), name, recs[0].Epoch, recs); err != nil {
		t.Fatalf("append %s to %s: %v", keys(recs), name, err)
	}
}

func read(t *testing.T, l journal.Log, name string, seal uint64) []journal.Record {
	t.Helper()
	got, err := l.Read(ctx(t), name, seal)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return got
}

// Same checks that got is exactly want, in order.
func Same(t testing.TB, got []journal.Record, want ...journal.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records (%s), want %d (%s)", len(got), keys(got), len(want), keys(want))
	}
	for i := range got {
		if got[i].Epoch != want[i].Epoch || got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("record %d is %d/%d (%d bytes), want %d/%d (%d bytes)", i,
				got[i].Epoch, got[i].Seq, len(got[i].Payload), want[i].Epoch, want[i].Seq, len(want[i].Payload))
		}
	}
}

// holds checks that got is want, after maybe some of covered (records a
// Trim covered, which a Log may keep), in order.
func holds(t *testing.T, got []journal.Record, covered []journal.Record, want ...journal.Record) {
	t.Helper()
	n := max(0, len(got)-len(want))
	j := 0
	for _, g := range got[:n] {
		for j < len(covered) && (covered[j].Epoch != g.Epoch || covered[j].Seq != g.Seq) {
			j++
		}
		if j == len(covered) {
			t.Fatalf("read %s: %d/%d is neither a covered record nor one of %s", keys(got), g.Epoch, g.Seq, keys(want))
		}
		j++
	}
	Same(t, got[n:], want...)
}

func keys(recs []journal.Record) string {
	var s []string
	for _, r := range recs {
		s = append(s, fmt.Sprintf("%d/%d", r.Epoch, r.Seq))
	}
	return strings.Join(s, " ")
}

func testAppendRead(t *testing.T, h Harness) {
	l := h.Log
	Same(t, read(t, l, "never", 0))
	a, b, c, e := Rec(1, 1, 100), Rec(1, 2, 0), Rec(1, 3, 70000), Rec(2, 1, 5)
	mustAppend(t, l, "vd", a)
	mustAppend(t, l, "vd", b, c)
	mustAppend(t, l, "vd", e)
	Same(t, read(t, l, "vd", 0), a, b, c, e)
	// Order is (Epoch, Seq), whatever the order of appends; a retried
	// append (same Epoch and Seq) is read once.
	mustAppend(t, l, "other", Rec(3, 9, 10))
	mustAppend(t, l, "other", Rec(3, 4, 10))
	mustAppend(t, l, "other", Rec(3, 9, 10))
	Same(t, read(t, l, "other", 0), Rec(3, 4, 10), Rec(3, 9, 10))
	// Payloads are not kept: the caller may reuse them at once.
	p := Rec(4, 1, 1000)
	buf := bytes.Clone(p.Payload)
	mustAppend(t, l, "reuse", journal.Record{Epoch: 4, Seq: 1, Payload: buf})
	clear(buf)
	Same(t, read(t, l, "reuse", 0), p)
	// Names are independent.
	Same(t, read(t, l, "vd", 0), a, b, c, e)
}

// testLargeRecord: a 12 MiB record (larger than a shard protocol frame a
// server reads in one go) and many small ones in one append.
func testLargeRecord(t *testing.T, h Harness) {
	big := Rec(2, 3, 12<<20)
	mustAppend(t, h.Log, "vd", Rec(2, 1, 100), Rec(2, 2, 0))
	mustAppend(t, h.Log, "vd", big)
	var many []journal.Record
	for s := uint64(10); s < 1010; s++ {
		many = append(many, Rec(2, s, int(s%7)))
	}
	mustAppend(t, h.Log, "vd", many...)
	Same(t, read(t, h.Log, "vd", 0), append([]journal.Record{Rec(2, 1, 100), Rec(2, 2, 0), big}, many...)...)
}

func testFencing(t *testing.T, h Harness) {
	l := h.Log
	mustAppend(t, l, "vd", Rec(3, 1, 10))
	Same(t, read(t, l, "vd", 5), Rec(3, 1, 10)) // seals at 5
	if err := l.Append(ctx(t), "vd", 4, []journal.Record{Rec(4, 1, 10)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("append below the seal: %v, want ErrFenced", err)
	}
	mustAppend(t, l, "vd", Rec(5, 1, 10))
	// A newer epoch's append seals implicitly.
	mustAppend(t, l, "vd", Rec(7, 1, 10))
	if err := l.Append(ctx(t), "vd", 6, []journal.Record{Rec(6, 1, 10)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("append below an implicit seal: %v, want ErrFenced", err)
	}
	// A lower seal does not lower it.
	Same(t, read(t, l, "vd", 2), Rec(3, 1, 10), Rec(5, 1, 10), Rec(7, 1, 10))
	if err := l.Append(ctx(t), "vd", 6, []journal.Record{Rec(6, 2, 10)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("append below the seal after a lower one: %v, want ErrFenced", err)
	}
	// Sealing a journal never written fences it too.
	Same(t, read(t, l, "fresh", 9))
	if err := l.Append(ctx(t), "fresh", 8, []journal.Record{Rec(8, 1, 1)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("append to a sealed empty journal: %v, want ErrFenced", err)
	}
	mustAppend(t, l, "fresh", Rec(9, 1, 1))
}

func testTrim(t *testing.T, h Harness) {
	l := h.Log
	// Every record covered: none is read any more, and the seal the
	// records implied survives them.
	mustAppend(t, l, "vd", Rec(4, 1, 100), Rec(4, 2, 100))
	mustAppend(t, l, "vd", Rec(4, 3, 100))
	if err := l.Trim(ctx(t), "vd", 4, 3); err != nil {
		t.Fatal(err)
	}
	Same(t, read(t, l, "vd", 0))
	if err := l.Append(ctx(t), "vd", 3, []journal.Record{Rec(3, 1, 1)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("append below the trimmed records' epoch: %v, want ErrFenced", err)
	}
	// Part covered: the rest is read, maybe after some covered ones.
	var recs []journal.Record
	for s := uint64(1); s <= 6; s++ {
		recs = append(recs, Rec(5, s, 300<<10))
		mustAppend(t, l, "vd", recs[len(recs)-1])
	}
	if err := l.Trim(ctx(t), "vd", 5, 1); err != nil {
		t.Fatal(err)
	}
	holds(t, read(t, l, "vd", 0), recs[:1], recs[1:]...)
	if err := l.Trim(ctx(t), "vd", 5, 4); err != nil {
		t.Fatal(err)
	}
	holds(t, read(t, l, "vd", 0), recs[:4], recs[4:]...)
	// Appends go on after trims.
	mustAppend(t, l, "vd", Rec(6, 1, 10))
	holds(t, read(t, l, "vd", 0), recs[:4], append(recs[4:], Rec(6, 1, 10))...)
	// Trim(All, All) forgets the journal and its seal.
	if err := l.Trim(ctx(t), "vd", journal.All, journal.All); err != nil {
		t.Fatal(err)
	}
	Same(t, read(t, l, "vd", 0))
	mustAppend(t, l, "vd", Rec(1, 1, 10))
	Same(t, read(t, l, "vd", 0), Rec(1, 1, 10))
	// Trimming a journal that does not exist is fine.
	if err := l.Trim(ctx(t), "nothing", 3, 3); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim(ctx(t), "nothing", journal.All, journal.All); err != nil {
		t.Fatal(err)
	}
}

// testFull: an append that would take a journal past MaxBytes fails with
// ErrFull until a Trim makes room.
func testFull(t *testing.T, h Harness) {
	l := h.Log
	p := make([]byte, 8<<20)
	var recs []journal.Record
	for s := range uint64(5) {
		recs = append(recs, journal.Record{Epoch: 1, Seq: s, Payload: p})
		mustAppend(t, l, "vd", recs[s])
	}
	next := journal.Record{Epoch: 1, Seq: 5, Payload: p}
	if err := l.Append(ctx(t), "vd", 1, []journal.Record{next}); !errors.Is(err, journal.ErrFull) {
		t.Fatalf("append past MaxBytes: %v, want ErrFull", err)
	}
	// Other journals are not affected.
	mustAppend(t, l, "other", Rec(1, 1, 10))
	if err := l.Trim(ctx(t), "vd", 1, 2); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "vd", next)
	holds(t, read(t, l, "vd", 0), recs[:3], recs[3], recs[4], next)
}

func testBadInput(t *testing.T, h Harness) {
	l := h.Log
	c := ctx(t)
	long := strings.Repeat("x", journal.MaxName+1)
	for what, err := range map[string]error{
		"empty name":       l.Append(c, "", 1, []journal.Record{Rec(1, 1, 1)}),
		"long name":        l.Append(c, long, 1, []journal.Record{Rec(1, 1, 1)}),
		"epoch 0":          l.Append(c, "vd", 0, []journal.Record{Rec(0, 1, 1)}),
		"epoch All":        l.Append(c, "vd", journal.All, []journal.Record{Rec(journal.All, 1, 1)}),
		"mixed epochs":     l.Append(c, "vd", 2, []journal.Record{Rec(2, 1, 1), Rec(3, 2, 1)}),
		"seq not rising":   l.Append(c, "vd", 2, []journal.Record{Rec(2, 5, 1), Rec(2, 5, 1)}),
		"no records":       l.Append(c, "vd", 2, nil),
		"too many records": l.Append(c, "vd", 2, make([]journal.Record, journal.MaxRecords+1)),
		"too large":        l.Append(c, "vd", 2, []journal.Record{{Epoch: 2, Seq: 1, Payload: make([]byte, journal.MaxBytes)}}),
		"read empty name":  func() error { _, err := l.Read(c, "", 0); return err }(),
		"read long name":   func() error { _, err := l.Read(c, long, 0); return err }(),
		"trim empty name":  l.Trim(c, "", 1, 1),
		"seal at All":      func() error { _, err := l.Read(c, "vd", journal.All); return err }(),
		"trim long name":   l.Trim(c, long, journal.All, journal.All),
	} {
		if !errors.Is(err, journal.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", what, err)
		}
	}
	Same(t, read(t, l, "vd", 0))
	mustAppend(t, l, strings.Repeat("y", journal.MaxName), Rec(1, 1, 1))
}

// Concurrent has 4 writers per name append 10 records each to names
// journals at once, reading each journal midway, and checks every journal
// holds all of them.
func Concurrent(t *testing.T, l journal.Log, names int) {
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, names*writers)
	c := ctx(t)
	for n := range names {
		for w := range writers {
			wg.Go(func() {
				name := fmt.Sprintf("vd-%d", n)
				for i := range each {
					seq := uint64(w*each + i)
					if err := l.Append(c, name, 1, []journal.Record{Rec(1, seq, 50+int(seq))}); err != nil {
						errs <- err
						return
					}
					if i == each/2 {
						if _, err := l.Read(c, name, 0); err != nil {
							errs <- err
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for n := range names {
		var all []journal.Record
		for s := range uint64(writers * each) {
			all = append(all, Rec(1, s, 50+int(s)))
		}
		Same(t, read(t, l, fmt.Sprintf("vd-%d", n), 0), all...)
	}
}

// testRestart: records, explicit and implicit seals, trims and the seal
// trimmed records implied all survive a restart.
func testRestart(t *testing.T, h Harness) {
	l := h.Log
	mustAppend(t, l, "vd", Rec(3, 1, 10), Rec(3, 2, 10))
	Same(t, read(t, l, "vd", 5), Rec(3, 1, 10), Rec(3, 2, 10))
	mustAppend(t, l, "vd", Rec(7, 1, 10))
	Same(t, read(t, l, "fresh", 9))
	mustAppend(t, l, "trimmed", Rec(4, 1, 10))
	if err := l.Trim(ctx(t), "trimmed", 4, 1); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "gone", Rec(8, 1, 10))
	if err := l.Trim(ctx(t), "gone", journal.All, journal.All); err != nil {
		t.Fatal(err)
	}
	l = h.Restart(t, nil)
	for name, below := range map[string]uint64{"vd": 6, "fresh": 8, "trimmed": 3} {
		if err := l.Append(ctx(t), name, below, []journal.Record{Rec(below, 9, 1)}); !errors.Is(err, journal.ErrFenced) {
			t.Fatalf("%s after a restart: %v, want ErrFenced", name, err)
		}
	}
	Same(t, read(t, l, "vd", 0), Rec(3, 1, 10), Rec(3, 2, 10), Rec(7, 1, 10))
	Same(t, read(t, l, "trimmed", 0))
	Same(t, read(t, l, "gone", 0))
	mustAppend(t, l, "gone", Rec(1, 1, 1))
	mustAppend(t, l, "vd", Rec(7, 2, 10))
	Same(t, read(t, l, "vd", 0), Rec(3, 1, 10), Rec(3, 2, 10), Rec(7, 1, 10), Rec(7, 2, 10))
}

// testTornTail: a crash cut the last append short on every copy (or left
// garbage after it): it is dropped, the others are read, and appends go on
// and survive another restart.
func testTornTail(t *testing.T, h Harness) {
	l := h.Log
	for _, how := range []string{"cut", "garbage"} {
		name := "torn-" + how
		a, b, c := Rec(1, 1, 300), Rec(1, 2, 300), Rec(1, 3, 300)
		mustAppend(t, l, name, a, b)
		mustAppend(t, l, name, c)
		kept := []journal.Record{a, b}
		crash := func(fs vfs.FS, dir string) { cutTail(t, fs, dir, name, 30) }
		if how == "garbage" {
			kept = append(kept, c)
			crash = func(fs vfs.FS, dir string) { appendGarbage(t, fs, dir, name) }
		}
		l = h.Restart(t, crash)
		Same(t, read(t, l, name, 0), kept...)
		e := Rec(1, 4, 200)
		mustAppend(t, l, name, e)
		Same(t, read(t, l, name, 0), append(kept, e)...)
		l = h.Restart(t, nil)
		Same(t, read(t, l, name, 0), append(kept, e)...)
	}
}

// JournalFile is the path of name's journal file in a journal.Dir's
// directory (see the journal package doc).
func JournalFile(fs vfs.FS, dir, name string) string {
	r := journal.RefOf(name)
	return fs.PathJoin(dir, hex.EncodeToString(r[:16])+".jnl")
}

// rewriteFile replaces path's contents with edit's result, if the file
// exists (a Dir that holds no copy of the journal has none).
func rewriteFile(t *testing.T, fs vfs.FS, path string, edit func([]byte) []byte) {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		return
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	data = edit(data)
	w, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func cutTail(t *testing.T, fs vfs.FS, dir, name string, n int) {
	rewriteFile(t, fs, JournalFile(fs, dir, name), func(b []byte) []byte { return b[:len(b)-n] })
}

func appendGarbage(t *testing.T, fs vfs.FS, dir, name string) {
	g := Rec(99, 99, 5000).Payload
	rewriteFile(t, fs, JournalFile(fs, dir, name), func(b []byte) []byte { return append(b, g...) })
}
