package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
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
type Requests struct {
	horizon uint64
	clock   int64
	bytes   int
	byID    map[string]*request
	queue   []*request // by index; the live entries are queue[head:]
	head    int

	replays uint64 // answered from the table since this process loaded it; not replicated
}

// request is one remembered command.
type request struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
	Time  int64  `json:"time"`
	// Sum is the CRC-32C of the command's op and arguments: a request id
	// reused for a different command is refused, not answered with the
	// other command's result.
	Sum    uint32          `json:"sum"`
	Result json.RawMessage `json:"result,omitempty"`
	Err    *Error          `json:"error,omitempty"`
}

func (r *request) size() int {
	n := requestOverhead + len(r.ID) + len(r.Result)
	if r.Err != nil {
		n += len(r.Err.Code) + len(r.Err.Msg)
	}
	return n
}

// answer returns the recorded result: the value as JSON (nil for none) or
// the error.
func (r *request) answer() (any, error) {
	if r.Err != nil {
		return nil, r.Err
	}
	if r.Result == nil {
		return nil, nil
	}
	return r.Result, nil
}

func newRequests() *Requests { return &Requests{byID: map[string]*request{}} }

// Len returns the number of ids remembered.
func (t *Requests) Len() int { return len(t.byID) }

// Bytes returns the size the table accounts for its entries.
func (t *Requests) Bytes() int { return t.bytes }

// Horizon returns the largest index of a forgotten entry (0: none yet).
func (t *Requests) Horizon() uint64 { return t.horizon }

// Replays counts the commands answered from the table since this copy of
// the table was created or restored. It is local accounting for metrics,
// not replicated state.
func (t *Requests) Replays() uint64 { return t.replays }

// Has reports whether id is remembered.
func (t *Requests) Has(id string) bool { return t.byID[id] != nil }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sumOf(c *Command) uint32 {
	sum := crc32.Update(0, castagnoli, []byte(c.Op))
	sum = crc32.Update(sum, castagnoli, []byte{0})
	return crc32.Update(sum, castagnoli, c.Args)
}

// forget drops the oldest entry.
func (t *Requests) forget() {
	r := t.queue[t.head]
	t.queue[t.head] = nil
	t.head++
	delete(t.byID, r.ID)
	t.bytes -= r.size()
	t.horizon = max(t.horizon, r.Index)
	if t.head > len(t.queue)/2 && t.head > 64 {
		t.queue = append(t.queue[:0:0], t.queue[t.head:]...)
		t.head = 0
	}
}

// expire advances the clock to now and forgets what is older than the TTL.
func (t *Requests) expire(now int64) {
	t.clock = max(t.clock, now)
	for t.head < len(t.queue) && t.queue[t.head].Time < t.clock-RequestTTL {
		t.forget()
	}
}

func (t *Requests) add(r *request) {
	t.byID[r.ID] = r
	t.queue = append(t.queue, r)
	t.bytes += r.size()
	for len(t.byID) > MaxRequests || t.bytes > MaxRequestBytes {
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
	sum := sumOf(c)
	if r := t.byID[c.ID]; r != nil {
		if r.Sum != sum {
			return nil, errf(ErrKeyReused, "request id %q was used at index %d for another command; use a new id (Idempotency-Key) for a new request", c.ID, r.Index)
		}
		t.replays++
		return r.answer()
	}
	if c.Seen < t.horizon {
		return nil, errf(ErrOutcomeUnknown, "request %q (%s) is older than the table of recent requests (it was first proposed at index %d, entries up to index %d were forgotten): it may have been applied already; read the state to find out", c.ID, c.Op, c.Seen, t.horizon)
	}
	v, err := s.applyOp(c)
	r := &request{ID: c.ID, Index: s.Index, Time: c.Time, Sum: sum}
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
	t.add(r)
	return v, err
}

// requestsFile is the snapshot form of a Requests: entries in index order.
type requestsFile struct {
	Horizon uint64     `json:"horizon"`
	Clock   int64      `json:"clock"`
	Entries []*request `json:"entries"`
}

// MarshalJSON implements json.Marshaler (snapshots).
func (t *Requests) MarshalJSON() ([]byte, error) {
	return json.Marshal(requestsFile{Horizon: t.horizon, Clock: t.clock, Entries: t.queue[t.head:]})
}

// UnmarshalJSON implements json.Unmarshaler (snapshots).
func (t *Requests) UnmarshalJSON(b []byte) error {
	var f requestsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	n := newRequests()
	n.horizon, n.clock = f.Horizon, f.Clock
	last := f.Horizon
	for _, r := range f.Entries {
		if r == nil || r.ID == "" || r.Index < last || n.byID[r.ID] != nil {
			return fmt.Errorf("fsm: request table: entry %+v out of order or repeated", r)
		}
		last = r.Index
		n.byID[r.ID] = r
		n.queue = append(n.queue, r)
		n.bytes += r.size()
	}
	*t = *n
	return nil
}
