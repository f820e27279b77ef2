package logstore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: i/10 + 1, Type: raft.LogCommand, Data: []byte{byte(i), byte(i >> 8), 7},
		Extensions: []byte("ext"), AppendedAt: time.Unix(1700000000, int64(i))}
}

func TestEmpty(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	if f, _ := s.FirstIndex(); f != 0 {
		t.Fatalf("first = %d, want 0", f)
	}
	if l, _ := s.LastIndex(); l != 0 {
		t.Fatalf("last = %d, want 0", l)
	}
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty = %v, want ErrLogNotFound", err)
	}
	v, err := s.Get([]byte("missing"))
	if err != nil || len(v) != 0 {
		t.Fatalf("Get missing = %q, %v; want empty, nil", v, err)
	}
	u, err := s.GetUint64([]byte("missing"))
	if err != nil || u != 0 {
		t.Fatalf("GetUint64 missing = %d, %v", u, err)
	}
}

func TestStoreGetDeleteRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var batch []*raft.Log
	for i := uint64(1); i <= 100; i++ {
		batch = append(batch, entry(i))
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(entry(101)); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, first, last uint64) {
		t.Helper()
		if f, _ := s.FirstIndex(); f != first {
			t.Fatalf("first = %d, want %d", f, first)
		}
		if l, _ := s.LastIndex(); l != last {
			t.Fatalf("last = %d, want %d", l, last)
		}
		for i := first; i <= last; i++ {
			var got raft.Log
			if err := s.GetLog(i, &got); err != nil {
				t.Fatalf("GetLog(%d): %v", i, err)
			}
			want := entry(i)
			if got.Index != i || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) ||
				!bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
				t.Fatalf("GetLog(%d) = %+v, want %+v", i, got, want)
			}
		}
		var l raft.Log
		if err := s.GetLog(first-1, &l); first > 1 && !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(first-1) = %v", err)
		}
		if err := s.GetLog(last+1, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(last+1) = %v", err)
		}
	}
	check(s, 1, 101)
	// Compaction: delete the head of the log.
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	check(s, 41, 101)
	// Conflict truncation: delete the tail.
	if err := s.DeleteRange(90, 101); err != nil {
		t.Fatal(err)
	}
	check(s, 41, 89)
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	defer s.Close()
	check(s, 41, 89)
	if u, err := s.GetUint64([]byte("CurrentTerm")); err != nil || u != 42 {
		t.Fatalf("after restart CurrentTerm = %d, %v", u, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("after restart LastVoteCand = %q, %v", v, err)
	}
	// Delete everything.
	if err := s.DeleteRange(0, 1<<63); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.FirstIndex(); f != 0 {
		t.Fatalf("first after delete all = %d", f)
	}
}

// TestAgainstInmem runs a random sequence of operations against this store
// and raft's reference InmemStore and requires identical answers.
func TestAgainstInmem(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	s := open(t, t.TempDir())
	defer s.Close()
	ref := raft.NewInmemStore()
	next := uint64(1)
	for op := 0; op < 2000; op++ {
		switch r := rng.IntN(10); {
		case r < 6:
			n := 1 + rng.IntN(20)
			var logs []*raft.Log
			for i := 0; i < n; i++ {
				logs = append(logs, entry(next))
				next++
			}
			if err := s.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			if err := ref.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
		case r < 8: // compact a prefix
			f, _ := ref.FirstIndex()
			if f == 0 || next-f < 5 {
				continue
			}
			hi := f + uint64(rng.IntN(int(next-f)/2))
			if err := s.DeleteRange(f, hi); err != nil {
				t.Fatal(err)
			}
			ref.DeleteRange(f, hi)
		default: // truncate a suffix (leader change)
			l, _ := ref.LastIndex()
			f, _ := ref.FirstIndex()
			if l == 0 || l-f < 5 {
				continue
			}
			lo := l - uint64(rng.IntN(4))
			if err := s.DeleteRange(lo, l); err != nil {
				t.Fatal(err)
			}
			ref.DeleteRange(lo, l)
			next = lo
		}
		f1, _ := s.FirstIndex()
		f2, _ := ref.FirstIndex()
		l1, _ := s.LastIndex()
		l2, _ := ref.LastIndex()
		if f1 != f2 || l1 != l2 {
			t.Fatalf("op %d: bounds (%d,%d), reference (%d,%d)", op, f1, l1, f2, l2)
		}
		probe := uint64(rng.IntN(int(next) + 2))
		var a, b raft.Log
		e1 := s.GetLog(probe, &a)
		e2 := ref.GetLog(probe, &b)
		if (e1 == nil) != (e2 == nil) || (e1 == nil && (a.Index != b.Index || !bytes.Equal(a.Data, b.Data))) {
			t.Fatalf("op %d: GetLog(%d) = %v %+v, reference %v %+v", op, probe, e1, a, e2, b)
		}
	}
}

func TestCorruptEntry(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	if err := s.db.Set(logKey(5), []byte{9, 9, 9}, nil); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(5, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetLog of garbage = %v, want ErrCorrupt", err)
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(nil, entry(3)))
	f.Add([]byte{1})
	f.Add([]byte{1, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			return
		}
		// A decodable entry survives encode/decode unchanged.
		var again raft.Log
		if err := decodeLog(encodeLog(nil, &l), &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Term != l.Term || again.Type != l.Type || !bytes.Equal(again.Data, l.Data) ||
			!bytes.Equal(again.Extensions, l.Extensions) || !again.AppendedAt.Equal(l.AppendedAt) {
			t.Fatalf("round trip: %+v -> %+v", l, again)
		}
	})
}

func BenchmarkStoreLogs(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	b.ReportAllocs()
	idx := uint64(1)
	for b.Loop() {
		logs := make([]*raft.Log, 16)
		for i := range logs {
			logs[i] = &raft.Log{Index: idx, Term: 1, Data: make([]byte, 200)}
			idx++
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
}
