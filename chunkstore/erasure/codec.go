package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/klauspost/reedsolomon"
	"github.com/zeebo/blake3"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/internal/bufpool"
)

// Codec splits chunks into shards and joins them back, with one cached
// reedsolomon encoder per profile. It is safe for concurrent use.
type Codec struct {
	mu   sync.Mutex
	encs map[chunkstore.Profile]reedsolomon.Encoder
}

// NewCodec returns an empty codec.
func NewCodec() *Codec { return &Codec{encs: map[chunkstore.Profile]reedsolomon.Encoder{}} }

func (c *Codec) encoder(p chunkstore.Profile) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.encs[p]; e != nil {
		return e, nil
	}
	e, err := reedsolomon.New(int(p.K), int(p.M))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", chunkstore.ErrBadProfile, p, err)
	}
	c.encs[p] = e
	return e, nil
}

// Encode splits data into the p.N() shards of profile p (data shards, the
// last zero padded, then parity). The shards share one new buffer; data is
// not retained.
func (c *Codec) Encode(p chunkstore.Profile, data []byte) ([][]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	k, n := int(p.K), p.N()
	size := chunkstore.ShardSize(len(data), k)
	buf := make([]byte, size*n)
	copy(buf, data)
	shards := make([][]byte, n)
	for i := range shards {
		shards[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	if p.M == 0 || size == 0 {
		return shards, nil
	}
	enc, err := c.encoder(p)
	if err != nil {
		return nil, err
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("erasure: encode %s: %w", p, err)
	}
	return shards, nil
}

// EncodeShared is Encode without copying the chunk: the full data shards
// alias data, the last (zero padded) data shard and the parity shards live
// in a pooled buffer. The shards are valid until release is called (once,
// after every reader of them is done) and as long as data is unchanged.
func (c *Codec) EncodeShared(p chunkstore.Profile, data []byte) (shards [][]byte, release func(), err error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	k, n := int(p.K), p.N()
	size := chunkstore.ShardSize(len(data), k)
	if size == 0 {
		shards, err := c.Encode(p, data)
		return shards, func() {}, err
	}
	full := min(len(data)/size, k) // data shards entirely inside data
	buf := bufpool.Get((n - full) * size)
	shards = make([][]byte, n)
	for i := range shards {
		if i < full {
			shards[i] = data[i*size : (i+1)*size : (i+1)*size]
			continue
		}
		j := i - full
		shards[i] = buf[j*size : (j+1)*size : (j+1)*size]
		if i < k {
			m := 0
			if off := i * size; off < len(data) {
				m = copy(shards[i], data[off:])
			}
			clear(shards[i][m:])
		}
	}
	release = func() { bufpool.Put(buf) }
	if p.M == 0 {
		return shards, release, nil
	}
	enc, err := c.encoder(p)
	if err != nil {
		release()
		return nil, nil, err
	}
	if err := enc.Encode(shards); err != nil {
		release()
		return nil, nil, fmt.Errorf("erasure: encode %s: %w", p, err)
	}
	return shards, release, nil
}

// errNoShortcut: Rebuild cannot work on the shards in place (a data shard
// with non-zero padding, or a profile without parity missing data); the
// caller decodes and re-encodes instead.
var errNoShortcut = errors.New("erasure: rebuild needs a full decode")

// Rebuild returns the shards at positions want of a chunk of chunkSize
// bytes, profile p, given some of its shards (indexed by position, nil
// where missing), without assembling the chunk: missing data shards and
// wanted shards are computed in pooled buffers (only those), and the chunk
// is verified against ref by hashing the data shards in place. The result
// is indexed by position (nil where not wanted) and valid until release.
func (c *Codec) Rebuild(p chunkstore.Profile, chunkSize int, shards [][]byte, ref chunkstore.Ref, want []int) (out [][]byte, release func(), err error) {
	k, n := int(p.K), p.N()
	size := chunkstore.ShardSize(chunkSize, k)
	if len(shards) != n || size == 0 {
		return nil, nil, errNoShortcut
	}
	work := make([][]byte, n)
	have := 0
	for i, sh := range shards {
		if sh == nil {
			continue
		}
		if len(sh) != size {
			return nil, nil, fmt.Errorf("%w: shard %d is %d bytes, want %d", chunkstore.ErrCorrupt, i, len(sh), size)
		}
		work[i] = sh
		have++
	}
	required := make([]bool, n)
	need := false
	for i := range n {
		if work[i] == nil && (i < k || slices.Contains(want, i)) {
			required[i], need = true, true
		}
	}
	var bufs [][]byte
	release = func() {
		for _, b := range bufs {
			bufpool.Put(b)
		}
		bufs = nil
	}
	if need {
		if have < k {
			return nil, nil, fmt.Errorf("%w: %d of %d shards, need %d", chunkstore.ErrUnavailable, have, n, k)
		}
		if p.M == 0 {
			return nil, nil, errNoShortcut
		}
		for i, r := range required {
			if r {
				b := bufpool.Get(size)
				bufs = append(bufs, b)
				work[i] = b[:0]
			}
		}
		enc, err := c.encoder(p)
		if err != nil {
			release()
			return nil, nil, err
		}
		if err := enc.ReconstructSome(work, required); err != nil {
			release()
			return nil, nil, fmt.Errorf("%w: reconstruct %s: %v", chunkstore.ErrCorrupt, p, err)
		}
	}
	// Verify: the data shards hash to ref, and the padding is zero (the
	// parity was computed over zero padding).
	h := blake3.New()
	for i := range k {
		d := work[i]
		end := min(size, max(chunkSize-i*size, 0))
		h.Write(d[:end])
		for _, b := range d[end:] {
			if b != 0 {
				release()
				return nil, nil, errNoShortcut
			}
		}
	}
	var got chunkstore.Ref
	h.Sum(got[:0])
	if got != ref {
		release()
		return nil, nil, fmt.Errorf("%w: chunk %s rebuilt from shards %s hashes to %s", chunkstore.ErrCorrupt, ref.Short(), p, got.Short())
	}
	out = make([][]byte, n)
	for _, i := range want {
		out[i] = work[i]
	}
	return out, release, nil
}

// Decode rebuilds the chunk of chunkSize bytes from shards (indexed by
// position, nil where missing). With every data shard present it only
// copies; otherwise it reconstructs from any K shards. The caller verifies
// the result against the Ref.
func (c *Codec) Decode(p chunkstore.Profile, chunkSize int, shards [][]byte) ([]byte, error) {
	k := int(p.K)
	size := chunkstore.ShardSize(chunkSize, k)
	have, dataOK := 0, true
	for i, s := range shards {
		if s != nil {
			if len(s) != size {
				return nil, fmt.Errorf("%w: shard %d is %d bytes, want %d", chunkstore.ErrCorrupt, i, len(s), size)
			}
			have++
		} else if i < k {
			dataOK = false
		}
	}
	if chunkSize == 0 {
		if have == 0 {
			return nil, fmt.Errorf("%w: no shard of an empty chunk", chunkstore.ErrUnavailable)
		}
		return []byte{}, nil
	}
	if !dataOK {
		if have < k {
			return nil, fmt.Errorf("%w: %d of %d shards, need %d", chunkstore.ErrUnavailable, have, p.N(), k)
		}
		enc, err := c.encoder(p)
		if err != nil {
			return nil, err
		}
		// The missing data shards are rebuilt in place in the chunk
		// returned (a zero-length shard with room is filled, not
		// allocated), the others copied next to them.
		out := make([]byte, k*size)
		work := make([][]byte, len(shards))
		copy(work, shards)
		for i := range k {
			if work[i] == nil {
				work[i] = out[i*size : i*size : (i+1)*size]
			}
		}
		if err := enc.ReconstructData(work); err != nil {
			return nil, fmt.Errorf("%w: reconstruct %s: %v", chunkstore.ErrCorrupt, p, err)
		}
		for i := range k {
			if shards[i] != nil {
				copy(out[i*size:], shards[i])
			} else if len(work[i]) != size || &work[i][0] != &out[i*size] {
				copy(out[i*size:], work[i]) // rebuilt elsewhere after all
			}
		}
		return out[:chunkSize:chunkSize], nil
	}
	// Join allocates without zeroing what it then overwrites (make would
	// clear the whole chunk first: a pass over every byte a read
	// returns). The data shards end in at most k-1 bytes of padding.
	out := bytes.Join(shards[:k], nil)
	return out[:chunkSize:chunkSize], nil
}
