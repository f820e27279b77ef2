package disk

import (
	"encoding/binary"
	"math/bits"

	"github.com/zosproject/zos/chunkstore"
)

// keyFilter answers "might the index hold this shard key?" without an
// index lookup. Every put looks its keys up first (the same bytes may be
// stored already), and nearly all of those keys are new: a pebble Get of
// a missing random key walks the memtable skiplist with a cache miss per
// level, 12-16% of a node's CPU under write load (profiled with `zos
// bench nbd --cpuprofile`). The filter turns those misses into a few
// memory probes.
//
// It is a scalable Bloom filter: layers of 10 bits per key and 7 probes
// (about 0.8% false positives each), a new layer of twice the capacity
// when the last is full, so it never needs the keys again. It holds every
// key set in the index since Open (load adds them all); deletes are not
// removed, which only costs a lookup. A "maybe" is answered by the index,
// so the filter can never make a stored shard look absent. Only the
// writer goroutine (and load, before it starts) uses it.
type keyFilter struct {
	layers []*bloomLayer
}

type bloomLayer struct {
	bits     []uint64
	mask     uint64 // len(bits)*64 - 1 (a power of two)
	n, limit int
}

const (
	filterFirst  = 1 << 20 // keys in the first layer
	filterProbes = 7
)

func newBloomLayer(keys int) *bloomLayer {
	m := uint64(1) << bits.Len64(uint64(keys*10-1)) // >= 10 bits per key
	return &bloomLayer{bits: make([]uint64, m/64), mask: m - 1, limit: keys}
}

// filterHash derives two hashes from a key: Refs are BLAKE3 digests, so
// their bytes are already uniform; profile and index are mixed in.
func filterHash(k chunkstore.ShardKey) (uint64, uint64) {
	h1 := binary.LittleEndian.Uint64(k.Ref[0:8])
	h2 := binary.LittleEndian.Uint64(k.Ref[8:16])
	mix := uint64(k.Profile.K)<<16 | uint64(k.Profile.M)<<8 | uint64(k.Index)
	h1 ^= mix * 0x9e3779b97f4a7c15
	return h1, h2 | 1
}

func (l *bloomLayer) add(h1, h2 uint64) {
	for i := range uint64(filterProbes) {
		b := (h1 + i*h2) & l.mask
		l.bits[b/64] |= 1 << (b % 64)
	}
	l.n++
}

func (l *bloomLayer) has(h1, h2 uint64) bool {
	for i := range uint64(filterProbes) {
		b := (h1 + i*h2) & l.mask
		if l.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

func (f *keyFilter) add(k chunkstore.ShardKey) {
	h1, h2 := filterHash(k)
	if len(f.layers) == 0 {
		f.layers = append(f.layers, newBloomLayer(filterFirst))
	}
	last := f.layers[len(f.layers)-1]
	if last.n >= last.limit {
		last = newBloomLayer(2 * last.limit)
		f.layers = append(f.layers, last)
	}
	last.add(h1, h2)
}

// mayContain is false only for keys never added.
func (f *keyFilter) mayContain(k chunkstore.ShardKey) bool {
	h1, h2 := filterHash(k)
	for _, l := range f.layers {
		if l.has(h1, h2) {
			return true
		}
	}
	return false
}
