package tree

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/zosproject/zos/chunkstore"
)

// Node encoding (format 1). A node is one chunk:
//
//	[0]      magic 'v'
//	[1]      format version (1)
//	[2]      log2 of the fanout F
//	[3]      level (0 = leaf)
//	[4:4+F/8] presence bitmap, slot s at byte s/8, bit s%8 (LSB first)
//	then one 32-byte Ref per set bit, in slot order
//
// Absent slots cost one bit, so a sparse node is small and a full node
// carries only F/8 bytes of overhead. The encoding is canonical: a given
// (level, slot -> Ref) map has exactly one encoding, so equal subtrees have
// equal Refs and the whole tree of a given block map has one root.
const (
	nodeMagic   = 'v'
	nodeVersion = 1
	headerSize  = 4
)

// node is an encoded node that passed validate. It is immutable.
type node []byte

func (n node) level() int { return int(n[3]) }

func (n node) bitmap(f int) []byte { return n[headerSize : headerSize+f/8] }

func (n node) count(f int) int { return (len(n) - headerSize - f/8) / chunkstore.RefSize }

func (n node) has(f, slot int) bool {
	return n[headerSize+slot/8]&(1<<(slot%8)) != 0
}

// rank returns the number of set bits before slot.
func rank(bm []byte, slot int) int {
	r := 0
	i := 0
	for ; i+8 <= slot/8; i += 8 {
		r += bits.OnesCount64(binary.LittleEndian.Uint64(bm[i:]))
	}
	for ; i < slot/8; i++ {
		r += bits.OnesCount8(bm[i])
	}
	return r + bits.OnesCount8(bm[slot/8]&(1<<(slot%8)-1))
}

// child returns the Ref in slot, or the zero Ref when the slot is empty.
func (n node) child(f, slot int) chunkstore.Ref {
	if !n.has(f, slot) {
		return chunkstore.Ref{}
	}
	off := headerSize + f/8 + rank(n.bitmap(f), slot)*chunkstore.RefSize
	return chunkstore.Ref(n[off : off+chunkstore.RefSize])
}

// each calls fn for every present slot in ascending order; fn returning
// false stops the walk.
func (n node) each(f int, fn func(slot int, ref chunkstore.Ref) bool) {
	bm := n.bitmap(f)
	off := headerSize + f/8
	for i, b := range bm {
		for b != 0 {
			j := bits.TrailingZeros8(b)
			b &^= 1 << j
			if !fn(i*8+j, chunkstore.Ref(n[off:off+chunkstore.RefSize])) {
				return
			}
			off += chunkstore.RefSize
		}
	}
}

// validate checks that b is a well-formed node for fanout 1<<shift.
func validate(b []byte, shift uint, maxLevel int) (node, error) {
	f := 1 << shift
	if len(b) < headerSize+f/8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrBadNode, len(b))
	}
	if b[0] != nodeMagic || b[1] != nodeVersion {
		return nil, fmt.Errorf("%w: bad magic or version %#x %#x", ErrBadNode, b[0], b[1])
	}
	if uint(b[2]) != shift {
		return nil, fmt.Errorf("%w: fanout 2^%d, tree uses 2^%d", ErrBadNode, b[2], shift)
	}
	if int(b[3]) > maxLevel {
		return nil, fmt.Errorf("%w: level %d above %d", ErrBadNode, b[3], maxLevel)
	}
	n := 0
	for _, x := range b[headerSize : headerSize+f/8] {
		n += bits.OnesCount8(x)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: empty node", ErrBadNode)
	}
	if len(b) != headerSize+f/8+n*chunkstore.RefSize {
		return nil, fmt.Errorf("%w: %d bytes for %d entries", ErrBadNode, len(b), n)
	}
	for i := 0; i < n; i++ {
		off := headerSize + f/8 + i*chunkstore.RefSize
		if chunkstore.Ref(b[off : off+chunkstore.RefSize]).IsZero() {
			return nil, fmt.Errorf("%w: zero ref in a present slot", ErrBadNode)
		}
	}
	return node(b), nil
}

// encode builds the node of level from a dense slot array; it returns nil
// when every slot is empty.
func encode(shift uint, level int, slots []chunkstore.Ref) []byte {
	f := 1 << shift
	n := 0
	for i := range slots {
		if !slots[i].IsZero() {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	b := make([]byte, headerSize+f/8+n*chunkstore.RefSize)
	b[0], b[1], b[2], b[3] = nodeMagic, nodeVersion, byte(shift), byte(level)
	off := headerSize + f/8
	for i := range slots {
		if slots[i].IsZero() {
			continue
		}
		b[headerSize+i/8] |= 1 << (i % 8)
		copy(b[off:], slots[i][:])
		off += chunkstore.RefSize
	}
	return b
}

// expand writes n's slots into the dense array dst (len F).
func (n node) expand(f int, dst []chunkstore.Ref) {
	clear(dst)
	n.each(f, func(slot int, ref chunkstore.Ref) bool {
		dst[slot] = ref
		return true
	})
}
