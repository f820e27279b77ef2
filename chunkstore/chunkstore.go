package chunkstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// MaxChunkSize is the largest chunk any Store accepts. Larger data is split
// into chunks plus a manifest chunk (see package blob).
const MaxChunkSize = 4 << 20

// RefSize is the length of a Ref in bytes.
const RefSize = 32

// Ref names a chunk: the BLAKE3-256 digest of its content. It is a
// comparable value type, usable as a map key; the zero Ref names nothing.
type Ref [RefSize]byte

// Sum returns the Ref of data.
func Sum(data []byte) Ref { return Ref(blake3.Sum256(data)) }

// ParseRef parses the 64-character lowercase or uppercase hex form of a Ref.
func ParseRef(s string) (Ref, error) {
	var r Ref
	if len(s) != 2*RefSize {
		return r, fmt.Errorf("%w: %q is %d characters, want %d hex characters", ErrBadRef, clip(s), len(s), 2*RefSize)
	}
	if _, err := hex.Decode(r[:], []byte(s)); err != nil {
		return r, fmt.Errorf("%w: %q is not hex", ErrBadRef, clip(s))
	}
	return r, nil
}

// MustParseRef is ParseRef for constants in tests; it panics on error.
func MustParseRef(s string) Ref {
	r, err := ParseRef(s)
	if err != nil {
		panic(err)
	}
	return r
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// String returns the 64-character lowercase hex form.
func (r Ref) String() string { return hex.EncodeToString(r[:]) }

// Short returns the first 12 hex characters, for logs.
func (r Ref) Short() string { return hex.EncodeToString(r[:6]) }

// IsZero reports whether r is the zero Ref.
func (r Ref) IsZero() bool { return r == Ref{} }

// MarshalText implements encoding.TextMarshaler (hex).
func (r Ref) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (r *Ref) UnmarshalText(b []byte) error {
	p, err := ParseRef(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// Errors. Implementations wrap these with %w and context; callers test with
// errors.Is or the classifiers below.
var (
	// ErrNotFound: no chunk with that Ref is stored.
	ErrNotFound = errors.New("chunkstore: not found")
	// ErrCorrupt: stored bytes failed their checksum or Ref and could not be
	// repaired from redundancy. Corrupt bytes are never returned.
	ErrCorrupt = errors.New("chunkstore: corrupt")
	// ErrTooLarge: a chunk larger than MaxChunkSize.
	ErrTooLarge = errors.New("chunkstore: chunk larger than 4 MiB")
	// ErrBadRef: a string that is not a Ref.
	ErrBadRef = errors.New("chunkstore: bad ref")
	// ErrUnavailable: too few nodes or shards reachable right now; retrying
	// later may succeed.
	ErrUnavailable = errors.New("chunkstore: unavailable")
)

// IsCorruption reports whether err means stored data failed verification.
func IsCorruption(err error) bool { return errors.Is(err, ErrCorrupt) }

// IsTransient reports whether err may go away on retry (unreachable nodes,
// timeouts, cancelled contexts are not transient: the caller gave up).
func IsTransient(err error) bool { return errors.Is(err, ErrUnavailable) }

// Info describes one stored chunk.
type Info struct {
	Ref  Ref
	Size int64
}

// Fetcher returns the content of a chunk. The returned slice is owned by the
// caller. A missing chunk is ErrNotFound; bytes that fail verification are
// never returned (ErrCorrupt).
type Fetcher interface {
	Fetch(ctx context.Context, ref Ref) ([]byte, error)
}

// Receiver stores a chunk and returns its Ref. Storing bytes that are already
// stored is cheap and returns the same Ref. data is not retained after Put
// returns. len(data) must be at most MaxChunkSize.
type Receiver interface {
	Put(ctx context.Context, data []byte) (Ref, error)
}

// Statter reports whether a chunk is stored and its size, without reading it
// all. Missing is ErrNotFound.
type Statter interface {
	Stat(ctx context.Context, ref Ref) (Info, error)
}

// Enumerator calls fn for every stored chunk whose Ref is greater than after,
// in ascending Ref order. Returning an error from fn stops the walk and is
// returned. Pass the zero Ref to start at the beginning.
type Enumerator interface {
	Enumerate(ctx context.Context, after Ref, fn func(Info) error) error
}

// Remover deletes chunks. Removing a missing chunk is not an error.
type Remover interface {
	Remove(ctx context.Context, refs ...Ref) error
}

// Store is the whole set. Every implementation passes chunkstore/storetest.
type Store interface {
	Fetcher
	Receiver
	Statter
	Enumerator
	Remover
}
