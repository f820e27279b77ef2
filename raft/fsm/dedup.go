package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"time"
)

// Bounds of the request table. They are part of the replicated state
// machine: every replica must use the same values, so changing one is a
// change of the log format (all voters must run the same version).
const (
	// RequestTTL is how long a request id is remembered, measured on the
	// proposers' clocks carried in the log (Command.Time).
	RequestTTL = int64(10 * time.Minute)
	// MaxRequests bounds the number of ids remembered.
	MaxRequests = 1 << 16
	// MaxRequestBytes bounds the ids and results remembered, in bytes
	// (each entry counts requestOverhead more).
	MaxRequestBytes = 32 << 20
	// MaxRequestID bounds the length of a request id.
	MaxRequestID = 512

	requestOverhead = 64
)

// Requests is the table of recent request ids and their results, which
// makes every command that carries an id take effect at most once (Raft
// dissertation §6.3): a command whose id is in the table is not applied
// again but answered with the first result.
//
// The table is part of the State, so it is replicated, snapshotted and
// restored with it, and it is a deterministic function of the log: its
// clock is the largest Command.Time recorded so far, and entries leave it,
// oldest first, when they are older than RequestTTL on that clock or when
// the table holds more than MaxRequests entries or MaxRequestBytes bytes.
// Horizon is the largest index of an entry that left: a command whose
// proposer had seen less of the log than that (Command.Seen < Horizon) and
// whose id is not in the table may have been applied and forgotten, so it
// is refused with ErrOutcomeUnknown instead of being applied again.
//
// Readers may call the methods of a Requests reached through a State they
// read; only Apply changes it.
//
// The table may hold tens of thousands of entries, so it is laid out for
// the garbage collector: nothing in it holds a pointer the collector must
// follow per entry. Entries are small fixed-size values in one FIFO slice;
// their ids, results and refusals are bytes in an append-only arena of
// 1 MiB chunks, dropped chunk by chunk as the oldest entries leave; the
// index from id to entry is keyed by a hash of the id. Collisions are
// resolved exactly (clash), so what the table answers never depends on
// the hash seed, which differs from process to process.
type Requests struct {
	horizon uint64
	clock   int64
	bytes   int
	// queue holds the entries in index order: the live ones are
	// queue[head:], and queue[i] has sequence number first+i.
	queue  []request
	head   int
	first  uint64
	byHash map[uint64]uint64 // hash of an id -> sequence number
	clash  map[string]uint64 // ids whose hash was taken when they came (almost always empty)
	data   arena

	replays uint64 // answered from the table since this process loaded it; not replicated
}

var requestSeed = maphash.MakeSeed()

func hashID(id string) uint64 { return maphash.String(requestSeed, id) }

// request is one remembered command. Its id, then its error code, then its
// result or error message, are len bytes at off in arena chunk chunk.
type request struct {
	index uint64
	hash  uint64 // hashID(id), the key in byHash
	time  int64
	// sum is the CRC-32C of the command's op and arguments: a request id
	// reused for a different command is refused, not answered with the
	// other command's result.
	sum     uint32
	chunk   uint32
	off     uint32
	dataLen uint32 // result or error message
	idLen   uint16
	codeLen uint8
	isErr   bool
}

func (r *request) size() int {
	return requestOverhead + int(r.idLen) + int(r.codeLen) + int(r.dataLen)
}

// requestEntry is the snapshot form of a request (and how one is added).
type requestEntry struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
	Time  int64  `json:"time"`
	Sum   uint32 `json:"sum"`
	// Result is the value's JSON encoding (none: the command had no
	// value); Err the refusal.
	Result json.RawMessage `json:"result,omitempty"`
	Err    *Error          `json:"error,omitempty"`
}

// arena holds the bytes of the entries, in chunks that are never written
// again once filled: slices of it can be handed out.
type arena struct {
	chunks [][]byte
	first  uint32 // sequence number of chunks[0]
}

const arenaChunk = 1 << 20

// alloc returns n fresh bytes and where they are.
func (a *arena) alloc(n int) (b []byte, chunk, off uint32) {
	if k := len(a.chunks); k == 0 || cap(a.chunks[k-1])-len(a.chunks[k-1]) < n {
		a.chunks = append(a.chunks, make([]byte, 0, max(arenaChunk, n)))
	}
	i := len(a.chunks) - 1
	c := a.chunks[i]
	a.chunks[i] = c[:len(c)+n]
	return c[len(c) : len(c)+n : len(c)+n], a.first + uint32(i), uint32(len(c))
}

func (a *arena) get(chunk, off uint32, n int) []byte {
	c := a.chunks[chunk-a.first]
	return c[off : int(off)+n : int(off)+n]
}

// release drops the chunks before chunk.
func (a *arena) release(chunk uint32) {
	for a.first < chunk && len(a.chunks) > 0 {
		a.chunks[0] = nil
		a.chunks = a.chunks[1:]
		a.first++
	}
}

func (t *Requests) bytesOf(r *request) []byte {
	return t.data.get(r.chunk, r.off, int(r.idLen)+int(r.codeLen)+int(r.dataLen))
}

func (t *Requests) idOf(r *request) []byte { return t.bytesOf(r)[:r.idLen] }

// entry returns the snapshot form of r.
func (t *Requests) entry(r *request) requestEntry {
	b := t.bytesOf(r)
	e := requestEntry{ID: string(b[:r.idLen]), Index: r.index, Time: r.time, Sum: r.sum}
	payload := b[int(r.idLen)+int(r.codeLen):]
	switch {
	case r.isErr:
		e.Err = &Error{Code: string(b[r.idLen : int(r.idLen)+int(r.codeLen)]), Msg: string(payload)}
	case len(payload) > 0:
		e.Result = json.RawMessage(payload)
	}
	return e
}

// answer returns the recorded result: the value as JSON (nil for none) or
// the error.
func (t *Requests) answer(r *request) (any, error) {
	b := t.bytesOf(r)
	payload := b[int(r.idLen)+int(r.codeLen):]
	switch {
	case r.isErr:
		return nil, &Error{Code: string(b[r.idLen : int(r.idLen)+int(r.codeLen)]), Msg: string(payload)}
	case len(payload) == 0:
		return nil, nil
	}
	return json.RawMessage(payload), nil
}

func newRequests() *Requests { return &Requests{byHash: map[uint64]uint64{}} }

// Len returns the number of ids remembered.
func (t *Requests) Len() int { return len(t.queue) - t.head }

// Bytes returns the size the table accounts for its entries.
func (t *Requests) Bytes() int { return t.bytes }

// Horizon returns the largest index of a forgotten entry (0: none yet).
func (t *Requests) Horizon() uint64 { return t.horizon }

// Replays counts the commands answered from the table since this copy of
// the table was created or restored. It is local accounting for metrics,
// not replicated state.
func (t *Requests) Replays() uint64 { return t.replays }

// Has reports whether id is remembered.
func (t *Requests) Has(id string) bool { return t.lookup(id, hashID(id)) != nil }

func (t *Requests) at(seq uint64) *request { return &t.queue[seq-t.first] }

func (t *Requests) lookup(id string, h uint64) *request {
	if seq, ok := t.byHash[h]; ok {
		if r := t.at(seq); string(t.idOf(r)) == id {
			return r
		}
	}
	if len(t.clash) > 0 {
		if seq, ok := t.clash[id]; ok {
			return t.at(seq)
		}
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sumOf(c *Command) uint32 {
	var buf [64]byte // ops are short: no allocation
	sum := crc32.Update(0, castagnoli, append(append(buf[:0], c.Op...), 0))
	return crc32.Update(sum, castagnoli, c.Args)
}

// forget drops the oldest entry.
func (t *Requests) forget() {
	seq := t.first + uint64(t.head)
	r := &t.queue[t.head]
	if s, ok := t.byHash[r.hash]; ok && s == seq {
		delete(t.byHash, r.hash)
	} else {
		delete(t.clash, string(t.idOf(r)))
	}
	t.bytes -= r.size()
	t.horizon = max(t.horizon, r.index)
	t.head++
	if t.head < len(t.queue) {
		t.data.release(t.queue[t.head].chunk)
	} else {
		t.data.release(r.chunk) // keep the chunk being filled
	}
	if t.head > len(t.queue)/2 && t.head >= 1024 {
		t.queue = append(t.queue[:0:0], t.queue[t.head:]...)
		t.first += uint64(t.head)
		t.head = 0
	}
}

// expire advances the clock to now and forgets what is older than the TTL.
func (t *Requests) expire(now int64) {
	t.clock = max(t.clock, now)
	for t.head < len(t.queue) && t.queue[t.head].time < t.clock-RequestTTL {
		t.forget()
	}
}

// add remembers e, whose id hashes to h, and forgets what exceeds the
// bounds.
func (t *Requests) add(e *requestEntry, h uint64) {
	r := request{index: e.Index, hash: h, time: e.Time, sum: e.Sum, idLen: uint16(len(e.ID))}
	payload := []byte(e.Result)
	var code string
	if e.Err != nil {
		r.isErr = true
		code = e.Err.Code[:min(len(e.Err.Code), 255)]
		r.codeLen = uint8(len(code))
		payload = []byte(e.Err.Msg)
	}
	r.dataLen = uint32(len(payload))
	b, chunk, off := t.data.alloc(int(r.idLen) + len(code) + len(payload))
	n := copy(b, e.ID)
	n += copy(b[n:], code)
	copy(b[n:], payload)
	r.chunk, r.off = chunk, off

	seq := t.first + uint64(len(t.queue))
	if _, taken := t.byHash[h]; taken {
		if t.clash == nil {
			t.clash = map[string]uint64{}
		}
		t.clash[e.ID] = seq
	} else {
		t.byHash[h] = seq
	}
	t.bytes += r.size()
	t.queue = append(t.queue, r)
	for t.Len() > MaxRequests || t.bytes > MaxRequestBytes {
		t.forget()
	}
}

// Apply applies one command. A command without an id (Command.ID) is
// simply applied. A command with an id is applied at most once: if the id
// is remembered, the command is answered with its first result (value or
// error) and not applied again; otherwise it is applied and its result
// remembered (see Requests).
//
// The value of a remembered command is returned as its JSON encoding
// (json.RawMessage). On error the State is unchanged, but for the request
// table, which remembers the refusal of a command with an id.
func (s *State) Apply(c *Command) (any, error) {
	if c.ID == "" {
		return s.applyOp(c)
	}
	t := s.Requests
	if len(c.ID) > MaxRequestID {
		return nil, errf(ErrInvalid, "request id of %d bytes exceeds %d", len(c.ID), MaxRequestID)
	}
	t.expire(c.Time)
	sum, h := sumOf(c), hashID(c.ID)
	if r := t.lookup(c.ID, h); r != nil {
		if r.sum != sum {
			return nil, errf(ErrKeyReused, "request id %q was used at index %d for another command; use a new id (Idempotency-Key) for a new request", c.ID, r.index)
		}
		t.replays++
		return t.answer(r)
	}
	if c.Seen < t.horizon {
		return nil, errf(ErrOutcomeUnknown, "request %q (%s) is older than the table of recent requests (it was first proposed at index %d, entries up to index %d were forgotten): it may have been applied already; read the state to find out", c.ID, c.Op, c.Seen, t.horizon)
	}
	v, err := s.applyOp(c)
	r := requestEntry{ID: c.ID, Index: s.Index, Time: c.Time, Sum: sum}
	switch {
	case err != nil:
		var fe *Error
		if !errors.As(err, &fe) {
			fe = &Error{Code: "internal", Msg: err.Error()}
		}
		r.Err = fe
	case v != nil:
		b, merr := json.Marshal(v)
		if merr != nil {
			// Not reachable for the State's own types; remember the
			// failure rather than nothing.
			r.Err = &Error{Code: "internal", Msg: fmt.Sprintf("encode result of %s: %v", c.Op, merr)}
			err = r.Err
			break
		}
		r.Result = b
		v = json.RawMessage(b)
	}
	t.add(&r, h)
	return v, err
}

// requestsFile is the snapshot form of a Requests: entries in index order.
type requestsFile struct {
	Horizon uint64         `json:"horizon"`
	Clock   int64          `json:"clock"`
	Entries []requestEntry `json:"entries"`
}

// MarshalJSON implements json.Marshaler (snapshots).
func (t *Requests) MarshalJSON() ([]byte, error) {
	f := requestsFile{Horizon: t.horizon, Clock: t.clock, Entries: make([]requestEntry, 0, t.Len())}
	for i := t.head; i < len(t.queue); i++ {
		f.Entries = append(f.Entries, t.entry(&t.queue[i]))
	}
	return json.Marshal(f)
}

// UnmarshalJSON implements json.Unmarshaler (snapshots).
func (t *Requests) UnmarshalJSON(b []byte) error {
	var f requestsFile
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return err
	}
	n := newRequests()
	n.horizon, n.clock = f.Horizon, f.Clock
	last := f.Horizon
	for i := range f.Entries {
		e := &f.Entries[i]
		h := hashID(e.ID)
		if e.ID == "" || len(e.ID) > MaxRequestID || e.Index < last || n.lookup(e.ID, h) != nil {
			return fmt.Errorf("fsm: request table: entry %q at index %d out of order, repeated or malformed", e.ID, e.Index)
		}
		last = e.Index
		n.add(e, h)
	}
	if n.Len() != len(f.Entries) {
		return fmt.Errorf("fsm: request table: %d entries exceed the bounds", len(f.Entries))
	}
	*t = *n
	return nil
}
