package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// replica is a replica of the state machine fed as the raft package feeds it:
// each command gets the next index and the proposer's time.
type replica struct {
	t   *testing.T
	s   *State
	idx uint64
	now int64
}

func newReplica(t *testing.T) *replica {
	l := &replica{t: t, s: NewState(), now: 1_000 * sec}
	if _, err := l.apply(OpInit, InitArgs{ClusterID: "c1", Secret: "0123456789abcdef0123", Admin: Token{ID: "admin", Hash: hashOf("a")}}, "", 0); err != nil {
		t.Fatal(err)
	}
	return l
}

// apply proposes op(args) as request id (none when "") first proposed
// when the proposer had applied seen.
func (l *replica) apply(op string, args any, id string, seen uint64) (any, error) {
	l.t.Helper()
	c, err := NewCommand(op, l.now, args)
	if err != nil {
		l.t.Fatal(err)
	}
	c.ID, c.Seen = id, seen
	b, err := c.Encode()
	if err != nil {
		l.t.Fatal(err)
	}
	if c, err = Decode(b); err != nil {
		l.t.Fatal(err)
	}
	l.idx++
	l.s.Index = l.idx
	return l.s.Apply(&c)
}

func (l *replica) snapshot() []byte {
	l.t.Helper()
	var b bytes.Buffer
	if err := l.s.WriteSnapshot(&b); err != nil {
		l.t.Fatal(err)
	}
	return b.Bytes()
}

// content is the snapshot of the state but for its index.
func (l *replica) content() []byte {
	l.t.Helper()
	idx := l.s.Index
	l.s.Index = 0
	defer func() { l.s.Index = idx }()
	return l.snapshot()
}

func kvVersion(t *testing.T, v any) uint64 {
	t.Helper()
	raw, ok := v.(json.RawMessage)
	if !ok {
		t.Fatalf("result of a request is %T, want json.RawMessage", v)
	}
	var kv KV
	if err := json.Unmarshal(raw, &kv); err != nil {
		t.Fatal(err)
	}
	return kv.Version
}

func u64(n uint64) *uint64 { return &n }

// TestRequestReplay: a command whose id was applied is answered with the
// first result — value or refusal — and never applied again.
func TestRequestReplay(t *testing.T) {
	l := newReplica(t)
	put := KVPutArgs{NS: "o", Key: "k", Value: []byte("v1")}
	v, err := l.apply(OpKVPut, put, "r1", l.idx)
	if err != nil || kvVersion(t, v) != 1 {
		t.Fatalf("first put: %v %v", v, err)
	}
	before := l.content()
	for range 3 {
		v, err := l.apply(OpKVPut, put, "r1", 1)
		if err != nil || kvVersion(t, v) != 1 {
			t.Fatalf("replayed put: %s %v", v, err)
		}
	}
	if l.s.KV["o"]["k"].Version != 1 {
		t.Fatalf("a replayed put was applied again: version %d", l.s.KV["o"]["k"].Version)
	}
	if got := l.s.Requests.Replays(); got != 3 {
		t.Fatalf("Replays() = %d, want 3", got)
	}
	if after := l.content(); !bytes.Equal(before, after) {
		t.Fatalf("replays changed the state:\n%s\n%s", before, after)
	}

	// A compare-and-swap that was applied is answered as applied when
	// retried, not with a conflict.
	cas := KVPutArgs{NS: "o", Key: "k", Value: []byte("v2"), IfVersion: u64(1)}
	if v, err := l.apply(OpKVPut, cas, "r2", l.idx); err != nil || kvVersion(t, v) != 2 {
		t.Fatalf("cas: %v %v", v, err)
	}
	if v, err := l.apply(OpKVPut, cas, "r2", l.idx); err != nil || kvVersion(t, v) != 2 {
		t.Fatalf("retried cas = %v %v, want its first answer", v, err)
	}
	// A refusal is remembered too: the retry of a refused CAS is refused
	// even once the version it wanted has come around.
	cas3 := KVPutArgs{NS: "o", Key: "j", Value: []byte("x"), IfVersion: u64(1)}
	if _, err := l.apply(OpKVPut, cas3, "r3", l.idx); !errors.Is(err, ErrConflict) {
		t.Fatalf("cas on a missing key: %v", err)
	}
	l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "j", Value: []byte("w")}, "", 0)
	if _, err := l.apply(OpKVPut, cas3, "r3", l.idx); !errors.Is(err, ErrConflict) {
		t.Fatalf("retried refused cas = %v, want its first answer (conflict)", err)
	}
	if l.s.KV["o"]["j"].Version != 1 {
		t.Fatal("a retried refused cas was applied")
	}
	// Ops without a result replay as nil.
	del := KVDeleteArgs{NS: "o", Key: "j"}
	for range 2 {
		if v, err := l.apply(OpKVDelete, del, "r4", l.idx); v != nil || err != nil {
			t.Fatalf("delete: %v %v", v, err)
		}
	}
	// An id used again for another command is refused, and changes nothing.
	before = l.content()
	if _, err := l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("other")}, "r1", l.idx); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("reused id: %v", err)
	}
	if !bytes.Equal(before, l.content()) {
		t.Fatal("a reused id changed the state")
	}
	// A command without an id is applied every time.
	for range 2 {
		l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "n", Value: []byte("x")}, "", 0)
	}
	if l.s.KV["o"]["n"].Version != 2 {
		t.Fatal("commands without an id were deduplicated")
	}
	if _, err := l.apply(OpKVPut, put, strings.Repeat("x", MaxRequestID+1), l.idx); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized id: %v", err)
	}
}

// TestRequestBatch: a batch is one request; the ids of its commands are
// ignored.
func TestRequestBatch(t *testing.T) {
	l := newReplica(t)
	sub, _ := NewCommand(OpKVPut, 0, KVPutArgs{NS: "o", Key: "k", Value: []byte("v")})
	sub.ID = "inner"
	batch := BatchArgs{Cmds: []Command{sub, sub}}
	for range 2 {
		if _, err := l.apply(OpBatch, batch, "b1", l.idx); err != nil {
			t.Fatal(err)
		}
	}
	if v := l.s.KV["o"]["k"].Version; v != 2 {
		t.Fatalf("version %d after a batch of two puts applied once, want 2", v)
	}
	if l.s.Requests.Has("inner") || !l.s.Requests.Has("b1") {
		t.Fatal("batch commands' own ids were recorded")
	}
}

// TestRequestExpiry: ids leave the table by age (on the log's clock), by
// count and by size, oldest first; a retry whose first attempt may have
// left is refused as outcome unknown, never applied twice.
func TestRequestExpiry(t *testing.T) {
	l := newReplica(t)
	put := func(key, id string) (any, error) {
		return l.apply(OpKVPut, KVPutArgs{NS: "o", Key: key, Value: []byte("v")}, id, l.idx)
	}
	put("k", "old")
	oldIdx := l.idx
	seen := oldIdx - 1 // what its proposer had applied
	l.now += RequestTTL / 2
	put("k", "young")
	// A proposer with a clock behind does not turn the table's clock back.
	l.now -= RequestTTL
	put("k", "late")
	l.now += RequestTTL
	if !l.s.Requests.Has("old") || l.s.Requests.Horizon() != 0 {
		t.Fatal("forgotten too early")
	}
	l.now += RequestTTL/2 + 1
	put("k", "new")
	if l.s.Requests.Has("old") || !l.s.Requests.Has("young") || l.s.Requests.Horizon() != oldIdx {
		t.Fatalf("after the TTL: has old %v, horizon %d (want %d)", l.s.Requests.Has("old"), l.s.Requests.Horizon(), oldIdx)
	}
	before := l.content()
	_, err := l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("v")}, "old", seen)
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("retry of a forgotten request = %v, want outcome_unknown", err)
	}
	if !bytes.Equal(before, l.content()) {
		t.Fatal("a retry of a forgotten request changed the state")
	}
	// A request first proposed after the horizon is applied.
	if _, err := l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("v")}, "fresh", l.idx); err != nil {
		t.Fatal(err)
	}

	// By count.
	l = newReplica(t)
	first := l.idx + 1
	c, _ := NewCommand(OpKVPut, l.now, KVPutArgs{NS: "o", Key: "c"})
	for i := range MaxRequests + 10 {
		c.ID, c.Seen = fmt.Sprint("id", i), l.idx
		l.idx++
		l.s.Index = l.idx
		if _, err := l.s.Apply(&c); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.s.Requests.Len(); n != MaxRequests {
		t.Fatalf("%d entries, want %d", n, MaxRequests)
	}
	if h := l.s.Requests.Horizon(); h != first+9 || l.s.Requests.Has("id9") || !l.s.Requests.Has("id10") {
		t.Fatalf("horizon %d, want %d", h, first+9)
	}

	// By size: results of 1 MiB values.
	l = newReplica(t)
	c, _ = NewCommand(OpKVPut, l.now, KVPutArgs{NS: "o", Key: "big", Value: make([]byte, MaxKVValue)})
	for i := range 30 {
		c.ID, c.Seen = fmt.Sprint("big", i), l.idx
		l.idx++
		l.s.Index = l.idx
		if _, err := l.s.Apply(&c); err != nil {
			t.Fatal(err)
		}
		if b := l.s.Requests.Bytes(); b > MaxRequestBytes {
			t.Fatalf("table holds %d bytes, more than %d", b, MaxRequestBytes)
		}
	}
	if n := l.s.Requests.Len(); n >= 30 || n < 20 || !l.s.Requests.Has("big29") {
		t.Fatalf("%d entries of 1 MiB results", n)
	}
}

// TestRequestSnapshot: the table is in the snapshot; a restored replica
// answers retries as the original does and stays in step with it; a
// snapshot written before the table existed restores with an empty one.
func TestRequestSnapshot(t *testing.T) {
	l := newReplica(t)
	for i := range 5 {
		l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte(fmt.Sprint(i))}, fmt.Sprint("r", i), l.idx)
	}
	l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("x"), IfVersion: u64(1)}, "refused", l.idx)
	l.now += RequestTTL + 1
	l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("last")}, "last", l.idx) // forgets the rest
	l.now -= RequestTTL / 2
	l.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("later")}, "later", l.idx)
	snap := l.snapshot()
	table := string(mustJSON(t, l.s.Requests))
	s2, err := ReadSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	l2 := &replica{t: t, s: s2, idx: l.idx, now: l.now}
	if !bytes.Equal(l2.snapshot(), snap) {
		t.Fatalf("round trip differs:\n%s\n%s", snap, l2.snapshot())
	}
	if s2.Requests.Len() != 2 || s2.Requests.Horizon() != l.s.Requests.Horizon() || s2.Requests.Bytes() != l.s.Requests.Bytes() {
		t.Fatalf("restored table: %d entries, horizon %d, %d bytes", s2.Requests.Len(), s2.Requests.Horizon(), s2.Requests.Bytes())
	}
	// Both replicas get the same commands: replays, a forgotten retry, new
	// requests, expiry.
	for _, r := range []*replica{l, l2} {
		v, err := r.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("last")}, "last", 1)
		if err != nil || kvVersion(t, v) != 6 {
			t.Fatalf("replay on %p: %v %v", r, v, err)
		}
		if _, err := r.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("0")}, "r0", 1); !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("forgotten retry: %v", err)
		}
		r.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("n")}, "n", r.idx)
		r.now += RequestTTL
		r.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("m")}, "m", r.idx)
	}
	if !bytes.Equal(l.snapshot(), l2.snapshot()) {
		t.Fatalf("the restored replica diverged:\n%s\n%s", l.snapshot(), l2.snapshot())
	}

	// A snapshot written by the code before the table (version 1,
	// testdata/snapshot-v1.json: key o/k at version 2, index 42) restores
	// with an empty table, and requests work on it.
	old, err := os.ReadFile("testdata/snapshot-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	s3, err := ReadSnapshot(bytes.NewReader(old))
	if err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
	if s3.Requests == nil || s3.Requests.Len() != 0 || s3.Requests.Horizon() != 0 || s3.KV["o"]["k"].Version != 2 || s3.Index != 42 {
		t.Fatal("version 1 snapshot restored wrong")
	}
	l3 := &replica{t: t, s: s3, idx: s3.Index, now: l.now}
	for range 2 {
		if v, err := l3.apply(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte("z")}, "z", 42); err != nil || kvVersion(t, v) != 3 {
			t.Fatalf("request after a version 1 snapshot: %v %v", v, err)
		}
	}
	if !strings.Contains(string(l3.snapshot()), `{"version":2,`) {
		t.Fatal("snapshots are not written as version 2")
	}

	// A damaged table is refused.
	for _, bad := range []string{
		`{"entries":[{"id":"a","index":5},{"id":"b","index":4}]}`,
		`{"entries":[{"id":"a","index":5},{"id":"a","index":6}]}`,
		`{"horizon":9,"entries":[{"id":"a","index":5}]}`,
		`{"entries":[{"index":5}]}`,
		`{"entries":[null]}`,
		`{"entries":[],"surprise":1}`,
	} {
		doc := strings.Replace(string(snap), table, bad, 1)
		if _, err := ReadSnapshot(strings.NewReader(doc)); err == nil {
			t.Errorf("table %s accepted", bad)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRequestHashClash: ids whose hashes collide are told apart, also as
// the older one leaves.
func TestRequestHashClash(t *testing.T) {
	tab := newRequests()
	tab.add(&requestEntry{ID: "a", Index: 1, Result: json.RawMessage(`"ra"`)}, 7)
	tab.add(&requestEntry{ID: "b", Index: 2, Err: &Error{Code: "conflict", Msg: "rb"}}, 7)
	tab.add(&requestEntry{ID: "c", Index: 3}, 8)
	for _, id := range []string{"a", "b", "c"} {
		h := uint64(7)
		if id == "c" {
			h = 8
		}
		if r := tab.lookup(id, h); r == nil || string(tab.idOf(r)) != id {
			t.Fatalf("lookup %s = %+v", id, r)
		}
	}
	if v, err := tab.answer(tab.lookup("a", 7)); err != nil || string(v.(json.RawMessage)) != `"ra"` {
		t.Fatalf("answer of a: %v %v", v, err)
	}
	if _, err := tab.answer(tab.lookup("b", 7)); !errors.Is(err, ErrConflict) || err.Error() != "rb" {
		t.Fatalf("answer of b: %v", err)
	}
	if v, err := tab.answer(tab.lookup("c", 8)); v != nil || err != nil {
		t.Fatalf("answer of c: %v %v", v, err)
	}
	if tab.lookup("x", 7) != nil {
		t.Fatal("found an id never added")
	}
	tab.forget() // a
	if tab.lookup("a", 7) != nil || tab.lookup("b", 7) == nil || tab.Horizon() != 1 {
		t.Fatal("after forgetting a")
	}
	tab.forget() // b
	if tab.lookup("b", 7) != nil || len(tab.clash) != 0 || len(tab.byHash) != 1 || tab.Len() != 1 {
		t.Fatalf("after forgetting b: clash %v, byHash %v", tab.clash, tab.byHash)
	}
}

// TestRequestArena: the bytes of forgotten entries are let go chunk by
// chunk, and results handed out stay intact.
func TestRequestArena(t *testing.T) {
	tab := newRequests()
	big := json.RawMessage(`"` + strings.Repeat("x", arenaChunk) + `"`)
	tab.add(&requestEntry{ID: "small", Index: 1, Result: json.RawMessage(`1`)}, hashID("small"))
	tab.add(&requestEntry{ID: "big", Index: 2, Result: big}, hashID("big"))
	tab.add(&requestEntry{ID: "after", Index: 3, Result: json.RawMessage(`3`)}, hashID("after"))
	if n := len(tab.data.chunks); n != 3 {
		t.Fatalf("%d chunks, want 3 (a chunk of its own for the big result)", n)
	}
	v, _ := tab.answer(tab.lookup("big", hashID("big")))
	tab.forget()
	tab.forget()
	if n := len(tab.data.chunks); n != 1 || tab.data.first != 2 {
		t.Fatalf("after forgetting two: %d chunks from %d", len(tab.data.chunks), tab.data.first)
	}
	if string(v.(json.RawMessage)) != string(big) {
		t.Fatal("a handed-out result changed")
	}
	tab.forget()
	if tab.Len() != 0 || tab.Bytes() != 0 || len(tab.data.chunks) != 1 {
		t.Fatalf("empty table: %d entries, %d bytes, %d chunks", tab.Len(), tab.Bytes(), len(tab.data.chunks))
	}
	tab.add(&requestEntry{ID: "next", Index: 4, Result: json.RawMessage(`4`)}, hashID("next"))
	if v, _ := tab.answer(tab.lookup("next", hashID("next"))); string(v.(json.RawMessage)) != "4" {
		t.Fatal("entry after emptying")
	}
}
