package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// This file defines shards: the pieces a chunk is erasure coded into and the
// unit every node's shard server stores. It lives in the root package because
// the local disk store, the wire protocol, the shard server, the remote client,
// the erasure store and the healer all speak it.

// MaxShards is the largest k+m a Profile may have: the widest stripe zos
// places (the codec itself would take up to 256 shards). The control plane
// refuses pool profiles beyond it (fsm.MaxShards is this constant).
const MaxShards = 32

// AnyIndex in a ShardKey used as a query means "any shard index".
const AnyIndex = 255

// Profile is an erasure-coding profile: a chunk is split into K data shards
// and M parity shards; any K of the K+M shards rebuild it. M = 0 (k+0) stores
// no redundancy (cache data). The zero Profile in a ShardKey used as a query
// means "any profile".
type Profile struct {
	K, M uint8
}

// N is the total number of shards, K+M.
func (p Profile) N() int { return int(p.K) + int(p.M) }

// IsZero reports whether p is the zero (wildcard) Profile.
func (p Profile) IsZero() bool { return p == Profile{} }

// String formats p as "k+m".
func (p Profile) String() string { return fmt.Sprintf("%d+%d", p.K, p.M) }

// ErrBadProfile: a profile that cannot be used.
var ErrBadProfile = errors.New("chunkstore: bad erasure profile")

// Validate checks 1 <= K and K+M <= MaxShards.
func (p Profile) Validate() error {
	if p.K < 1 || p.N() > MaxShards {
		return fmt.Errorf("%w: %s (want k >= 1 and k+m <= %d)", ErrBadProfile, p, MaxShards)
	}
	return nil
}

// ParseProfile parses "k+m", e.g. "4+2" or "1+0".
func ParseProfile(s string) (Profile, error) {
	ks, ms, ok := strings.Cut(strings.TrimSpace(s), "+")
	if !ok {
		return Profile{}, fmt.Errorf("%w: %q is not of the form k+m", ErrBadProfile, clip(s))
	}
	k, err1 := strconv.ParseUint(ks, 10, 8)
	m, err2 := strconv.ParseUint(ms, 10, 8)
	if err1 != nil || err2 != nil {
		return Profile{}, fmt.Errorf("%w: %q is not of the form k+m", ErrBadProfile, clip(s))
	}
	p := Profile{K: uint8(k), M: uint8(m)}
	return p, p.Validate()
}

// DefaultProfile returns the profile a pool of the given number of storage
// nodes uses by default: 1 -> 1+0, 2 -> 1+1, 3 -> 2+1, 4 -> 2+2, 5 -> 3+2,
// 6..7 -> 4+2, 8..11 -> 6+2, 12 and more -> 8+3. Every profile with m >= 1
// keeps each shard on a distinct node, so it survives the loss of m nodes.
func DefaultProfile(nodes int) Profile {
	switch {
	case nodes <= 1:
		return Profile{K: 1, M: 0}
	case nodes == 2:
		return Profile{K: 1, M: 1}
	case nodes == 3:
		return Profile{K: 2, M: 1}
	case nodes == 4:
		return Profile{K: 2, M: 2}
	case nodes == 5:
		return Profile{K: 3, M: 2}
	case nodes < 8:
		return Profile{K: 4, M: 2}
	case nodes < 12:
		return Profile{K: 6, M: 2}
	default:
		return Profile{K: 8, M: 3}
	}
}

// ShardSize is the length of each shard of a chunk of chunkSize bytes coded
// with k data shards: ceil(chunkSize/k). The last data shard is zero padded.
func ShardSize(chunkSize, k int) int {
	if k <= 0 {
		return 0
	}
	return (chunkSize + k - 1) / k
}

// ShardKey names one shard: shard Index of chunk Ref coded with Profile.
// Keys order by Ref, then profile, then index. Used as a query, a zero
// Profile matches any profile and Index AnyIndex matches any index.
type ShardKey struct {
	Ref     Ref
	Profile Profile
	Index   uint8
}

// ShardKeySize is the length of an encoded ShardKey.
const ShardKeySize = RefSize + 3

// AppendBinary appends the 35-byte order-preserving encoding of k.
func (k ShardKey) AppendBinary(b []byte) []byte {
	b = append(b, k.Ref[:]...)
	return append(b, k.Profile.K, k.Profile.M, k.Index)
}

// DecodeShardKey decodes the encoding made by AppendBinary.
func DecodeShardKey(b []byte) (ShardKey, error) {
	var k ShardKey
	if len(b) != ShardKeySize {
		return k, fmt.Errorf("%w: shard key is %d bytes, want %d", ErrBadRef, len(b), ShardKeySize)
	}
	copy(k.Ref[:], b)
	k.Profile = Profile{K: b[RefSize], M: b[RefSize+1]}
	k.Index = b[RefSize+2]
	return k, nil
}

// Compare orders keys like their encodings.
func (k ShardKey) Compare(o ShardKey) int {
	if c := bytes.Compare(k.Ref[:], o.Ref[:]); c != 0 {
		return c
	}
	switch {
	case k.Profile.K != o.Profile.K:
		return int(k.Profile.K) - int(o.Profile.K)
	case k.Profile.M != o.Profile.M:
		return int(k.Profile.M) - int(o.Profile.M)
	}
	return int(k.Index) - int(o.Index)
}

// IsQuery reports whether k has a wildcard profile or index.
func (k ShardKey) IsQuery() bool { return k.Profile.IsZero() || k.Index == AnyIndex }

// Matches reports whether the concrete key c matches the (possibly wildcard)
// key k.
func (k ShardKey) Matches(c ShardKey) bool {
	return k.Ref == c.Ref &&
		(k.Profile.IsZero() || k.Profile == c.Profile) &&
		(k.Index == AnyIndex || k.Index == c.Index)
}

// Validate checks that k names a storable shard (no wildcards, index in
// range, valid profile, non-zero Ref).
func (k ShardKey) Validate() error {
	if k.Ref.IsZero() {
		return fmt.Errorf("%w: zero ref in shard key", ErrBadRef)
	}
	if err := k.Profile.Validate(); err != nil {
		return err
	}
	if int(k.Index) >= k.Profile.N() {
		return fmt.Errorf("%w: shard index %d out of range for profile %s", ErrBadProfile, k.Index, k.Profile)
	}
	return nil
}

// String formats k as "ref/k+m/index".
func (k ShardKey) String() string {
	return fmt.Sprintf("%s/%s/%d", k.Ref.Short(), k.Profile, k.Index)
}

// ShardInfo is a shard's header: everything about it but its bytes.
type ShardInfo struct {
	Key ShardKey
	// Size is the length of the shard's data.
	Size uint32
	// ChunkSize is the length of the whole chunk the shard belongs to.
	ChunkSize uint32
	// Sum is the CRC-32C (Castagnoli) of the shard's data.
	Sum uint32
	// Written is when the shard was last written or re-put (Unix
	// nanoseconds, the storing node's clock). Garbage collection spares
	// shards written after its cutoff.
	Written int64
}

// Shard is a shard with its data.
type Shard struct {
	ShardInfo
	Data []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ShardSum is the checksum stored with every shard: CRC-32C of data.
func ShardSum(data []byte) uint32 { return crc32.Checksum(data, castagnoli) }

// NewShard returns a shard with its size and checksum filled in.
func NewShard(key ShardKey, chunkSize int, data []byte) Shard {
	return Shard{ShardInfo: ShardInfo{Key: key, Size: uint32(len(data)), ChunkSize: uint32(chunkSize), Sum: ShardSum(data)}, Data: data}
}

// Verify checks the shard's data against its size and checksum. The error
// wraps ErrCorrupt.
func (s Shard) Verify() error {
	if int(s.Size) != len(s.Data) {
		return fmt.Errorf("%w: shard %s has %d bytes, header says %d", ErrCorrupt, s.Key, len(s.Data), s.Size)
	}
	if got := ShardSum(s.Data); got != s.Sum {
		return fmt.Errorf("%w: shard %s checksum %08x, want %08x", ErrCorrupt, s.Key, got, s.Sum)
	}
	return nil
}

// CheckShape validates a shard's key and that its size fits its chunk size
// and profile. It does not read the data.
func (i ShardInfo) CheckShape() error {
	if err := i.Key.Validate(); err != nil {
		return err
	}
	if i.ChunkSize > MaxChunkSize {
		return fmt.Errorf("%w: shard %s of a %d-byte chunk", ErrTooLarge, i.Key, i.ChunkSize)
	}
	if want := ShardSize(int(i.ChunkSize), int(i.Key.Profile.K)); int(i.Size) != want {
		return fmt.Errorf("%w: shard %s is %d bytes, want %d for a %d-byte chunk", ErrBadProfile, i.Key, i.Size, want, i.ChunkSize)
	}
	return nil
}

// ShardResult is the answer for one key of a batched get or stat. Err is nil,
// or wraps ErrNotFound or ErrCorrupt (corrupt data is never returned).
type ShardResult struct {
	Shard Shard
	Err   error
	// Release, if set, recycles the buffer holding Shard.Data. A caller
	// done with the data may call it (once; Data must not be used after);
	// one that does not leaves the buffer to the garbage collector.
	Release func()
}

// ReleaseResults calls the Release of every result that has one.
func ReleaseResults(res []ShardResult) {
	for i := range res {
		if res[i].Release != nil {
			res[i].Release()
			res[i].Release = nil
		}
	}
}

// ShardPutter stores shards. A batch is durable when PutShards returns nil;
// on error none, some or all of the batch may be stored. Putting a shard that
// is already stored with the same checksum only refreshes its Written time.
// The shards' data is neither retained nor read after PutShards returns,
// whatever the outcome (callers reuse their buffers).
type ShardPutter interface {
	PutShards(ctx context.Context, shards []Shard) error
}

// ShardGetter reads shards. The result has one entry per key, in order; a key
// with wildcards returns the first matching shard. Every returned shard has
// been verified against its checksum. The error is for the whole call
// (transport, closed store); per-key failures are in the results.
type ShardGetter interface {
	GetShards(ctx context.Context, keys []ShardKey) ([]ShardResult, error)
}

// UnverifiedGetter is GetShards without the check on arrival, for a
// remote store whose server verified each shard before sending it: a
// caller that verifies what it assembles anyway (a chunk against its Ref)
// skips checksumming every shard a second time, and calls Shard.Verify on
// each only when that check fails (a shard damaged in transit).
type UnverifiedGetter interface {
	GetShardsUnverified(ctx context.Context, keys []ShardKey) ([]ShardResult, error)
}

// ShardRange names Len bytes at Off of the data of the shard Key (a
// concrete key: no wildcards).
type ShardRange struct {
	Key      ShardKey
	Off, Len uint32
}

// Check reports why r cannot name a part of a shard (nil when it can).
func (r ShardRange) Check() error {
	if err := r.Key.Validate(); err != nil {
		return err
	}
	if r.Len > MaxChunkSize || r.Off > MaxChunkSize-r.Len {
		return fmt.Errorf("%w: [%d, +%d) of shard %s", ErrBadRange, r.Off, r.Len, r.Key)
	}
	return nil
}

// ShardRangeGetter reads parts of shards: the result for each range has
// the whole shard's header as ShardInfo and the range's Len bytes as
// Data. A part of a shard cannot be checked against the shard's checksum,
// so the bytes are NOT verified (the record's header is): callers verify
// what they assemble (chunkstore.FetchRanges' contract). A range past the
// shard's end is answered with ErrBadRange.
type ShardRangeGetter interface {
	GetShardRanges(ctx context.Context, rs []ShardRange) ([]ShardResult, error)
}

// ShardStatter is GetShards without the data (results have nil Data and
// are not verified).
type ShardStatter interface {
	StatShards(ctx context.Context, keys []ShardKey) ([]ShardResult, error)
}

// ShardDeleter deletes shards matching keys (wildcards allowed). With
// writtenBefore != 0 only shards whose Written time is before it are
// deleted: a shard re-put concurrently survives. It returns how many shards
// were deleted. Deleting missing shards is not an error.
type ShardDeleter interface {
	DeleteShards(ctx context.Context, keys []ShardKey, writtenBefore int64) (int, error)
}

// ShardEnumerator returns up to limit shard headers with keys greater than
// after, in key order. Fewer than limit (possibly none) means the end.
type ShardEnumerator interface {
	EnumerateShards(ctx context.Context, after ShardKey, limit int) ([]ShardInfo, error)
}

// ShardStore is the whole set, implemented by the local disk store and the
// remote shard client.
type ShardStore interface {
	ShardPutter
	ShardGetter
	ShardStatter
	ShardDeleter
	ShardEnumerator
}

// ShardStoreStats summarises a shard store.
type ShardStoreStats struct {
	Shards     int64 // live shards
	Bytes      int64 // live shard data bytes
	DiskBytes  int64 // bytes on disk, including dead space not yet compacted
	DeadBytes  int64 // dead bytes awaiting compaction
	Corrupt    int64 // shards found corrupt (and quarantined) since open
	Segments   int   // data files
	Compacted  int64 // bytes reclaimed by compaction since open
	WriteBytes int64 // bytes written since open
	ReadBytes  int64 // bytes read since open
}

// ShardStatser is an optional capability: store-wide counters.
type ShardStatser interface {
	ShardStats(ctx context.Context) (ShardStoreStats, error)
}

// WalkShards calls fn for every shard header in s after after, in key order,
// fetching pages of pageSize (default 1024).
func WalkShards(ctx context.Context, s ShardEnumerator, after ShardKey, pageSize int, fn func(ShardInfo) error) error {
	if pageSize <= 0 {
		pageSize = 1024
	}
	for {
		page, err := s.EnumerateShards(ctx, after, pageSize)
		if err != nil {
			return err
		}
		for _, si := range page {
			if err := fn(si); err != nil {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		after = page[len(page)-1].Key
	}
}

// LocalShardStore is a node's own shard store with a place for
// checkpoints (disk.Store is one): what heal and scrub work on.
type LocalShardStore interface {
	ShardStore
	SetMeta(name string, value []byte) error
	GetMeta(name string) ([]byte, error)
	DeleteMeta(name string) error
}
