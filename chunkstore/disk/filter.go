package disk

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"

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
// so the filter can never make a stored shard look absent.
//
// Reads ask it too: a read names a Ref and an index under any profile, and
// resolve tries each profile the store holds, so a store that also holds
// tiny (1+m) chunks answered every 2+1 data shard read with a missed Get
// first. Only the writer goroutine (and load, before it starts) adds;
// readers may ask at any time. Bits are set with atomic ORs and read with
// atomic loads, and the layer list is replaced, never changed in place. A
// key is added while its group is prepared, before the group's index
// batch commits and so before its put is answered; a read that misses it
// in the filter began before the put was answered.
type keyFilter struct {
	layers atomic.Pointer[[]*bloomLayer]
	first  int // keys in the first layer; 0: filterFirst (tests set less)
}

type bloomLayer struct {
	bits     []atomic.Uint64
	mask     uint64 // len(bits)*64 - 1 (a power of two)
	n, limit int    // writer-only
}

const (
	filterFirst  = 1 << 20 // keys in the first layer
	filterProbes = 7
)

func newBloomLayer(keys int) *bloomLayer {
	m := uint64(1) << bits.Len64(uint64(keys*10-1)) // >= 10 bits per key
	return &bloomLayer{bits: make([]atomic.Uint64, m/64), mask: m - 1, limit: keys}
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
		if w := &l.bits[b/64]; w.Load()&(1<<(b%64)) == 0 {
			w.Or(1 << (b % 64))
		}
	}
	l.n++
}

func (l *bloomLayer) has(h1, h2 uint64) bool {
	for i := range uint64(filterProbes) {
		b := (h1 + i*h2) & l.mask
		if l.bits[b/64].Load()&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// add records k. Writer-only.
func (f *keyFilter) add(k chunkstore.ShardKey) {
	h1, h2 := filterHash(k)
	var layers []*bloomLayer
	if p := f.layers.Load(); p != nil {
		layers = *p
	}
	if len(layers) == 0 || layers[len(layers)-1].n >= layers[len(layers)-1].limit {
		limit := f.first
		if limit == 0 {
			limit = filterFirst
		}
		if len(layers) > 0 {
			limit = 2 * layers[len(layers)-1].limit
		}
		next := append(layers[:len(layers):len(layers)], newBloomLayer(limit))
		f.layers.Store(&next)
		layers = next
	}
	layers[len(layers)-1].add(h1, h2)
}

// mayContain is false only for keys never added. Safe for any goroutine.
func (f *keyFilter) mayContain(k chunkstore.ShardKey) bool {
	p := f.layers.Load()
	if p == nil {
		return false
	}
	h1, h2 := filterHash(k)
	for _, l := range *p {
		if l.has(h1, h2) {
			return true
		}
	}
	return false
}
