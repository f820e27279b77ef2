package tree

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/zosproject/zos/chunkstore"
)

// Node encoding. A node is one chunk.
//
// Format 1 (interior nodes, and leaves whose blocks are all chunks of
// their own):
//
//	[0]      magic 'v'
//	[1]      format version (1)
//	[2]      log2 of the fanout F
//	[3]      level (0 = leaf)
//	[4:4+F/8] presence bitmap, slot s at byte s/8, bit s%8 (LSB first)
//	then one 32-byte Ref per set bit, in slot order
//
// Format 2 (leaves with at least one block inside an extent):
//
//	[0:4]              'v', 2, log2 F, 0 (always a leaf)
//	[4:4+F/8]          presence bitmap
//	[4+F/8:4+2F/8]     extent bitmap (a subset of the presence bitmap)
//	then per present slot, in slot order: the block's Ref (32 bytes) and,
//	when its extent bit is set, the extent's Ref (32), the block's slot in
//	the extent (uint16 LE) and the extent's block count (uint16 LE)
//
// Absent slots cost one bit (two in format 2), so a sparse node is small.
// The encoding is canonical: a leaf uses format 2 exactly when some entry
// is in an extent, and a given (level, slot -> entry) map has exactly one
// encoding, so equal subtrees have equal Refs and the whole tree of a given
// block map has one root. Trees written before extents existed are format
// 1 throughout and read unchanged.
const (
	nodeMagic    = 'v'
	nodeVersion  = 1
	nodeVersion2 = 2
	headerSize   = 4
	// extSize is what an extent bit adds to a format 2 entry.
	extSize = chunkstore.RefSize + 4
)

// node is an encoded node that passed validate. It is immutable.
type node []byte

func (n node) level() int { return int(n[3]) }

func (n node) v2() bool { return n[1] == nodeVersion2 }

func (n node) bitmap(f int) []byte { return n[headerSize : headerSize+f/8] }

// extBitmap is the extent bitmap of a format 2 leaf.
func (n node) extBitmap(f int) []byte { return n[headerSize+f/8 : headerSize+f/4] }

// entriesAt is the offset of the first entry.
func (n node) entriesAt(f int) int {
	if n.v2() {
		return headerSize + f/4
	}
	return headerSize + f/8
}

func (n node) count(f int) int { return popcount(n.bitmap(f)) }

func (n node) has(f, slot int) bool {
	return n[headerSize+slot/8]&(1<<(slot%8)) != 0
}

func popcount(bm []byte) int {
	c := 0
	for _, x := range bm {
		c += bits.OnesCount8(x)
	}
	return c
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

// offset is where slot's entry starts (the slot must be present).
func (n node) offset(f, slot int) int {
	off := n.entriesAt(f) + rank(n.bitmap(f), slot)*chunkstore.RefSize
	if n.v2() {
		off += rank(n.extBitmap(f), slot) * extSize
	}
	return off
}

// child returns the Ref in slot (for a leaf, the block's content Ref), or
// the zero Ref when the slot is empty.
func (n node) child(f, slot int) chunkstore.Ref {
	if !n.has(f, slot) {
		return chunkstore.Ref{}
	}
	off := n.offset(f, slot)
	return chunkstore.Ref(n[off : off+chunkstore.RefSize])
}

// entry returns the leaf entry in slot (zero when empty).
func (n node) entry(f, slot int) Entry {
	if !n.has(f, slot) {
		return Entry{}
	}
	e, _ := n.entryAt(f, slot, n.offset(f, slot))
	return e
}

// entryAt decodes the entry of slot at off and returns it and its size.
func (n node) entryAt(f, slot, off int) (Entry, int) {
	e := Entry{Ref: chunkstore.Ref(n[off : off+chunkstore.RefSize])}
	if !n.v2() || n[headerSize+f/8+slot/8]&(1<<(slot%8)) == 0 {
		return e, chunkstore.RefSize
	}
	x := n[off+chunkstore.RefSize:]
	e.Ext = chunkstore.Ref(x[:chunkstore.RefSize])
	e.Slot = binary.LittleEndian.Uint16(x[chunkstore.RefSize:])
	e.Blocks = binary.LittleEndian.Uint16(x[chunkstore.RefSize+2:])
	return e, chunkstore.RefSize + extSize
}

// each calls fn for every present slot in ascending order with its Ref
// (for a leaf, the block's content Ref); fn returning false stops the walk.
func (n node) each(f int, fn func(slot int, ref chunkstore.Ref) bool) {
	n.eachEntry(f, func(slot int, e Entry) bool { return fn(slot, e.Ref) })
}

// eachEntry calls fn for every present slot in ascending order with its
// entry; fn returning false stops the walk.
func (n node) eachEntry(f int, fn func(slot int, e Entry) bool) {
	bm := n.bitmap(f)
	off := n.entriesAt(f)
	for i, b := range bm {
		for b != 0 {
			j := bits.TrailingZeros8(b)
			b &^= 1 << j
			e, sz := n.entryAt(f, i*8+j, off)
			if !fn(i*8+j, e) {
				return
			}
			off += sz
		}
	}
}

// validate checks that b is a well-formed node for fanout 1<<shift.
func validate(b []byte, shift uint, maxLevel int) (node, error) {
	f := 1 << shift
	if len(b) < headerSize+f/8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrBadNode, len(b))
	}
	if b[0] != nodeMagic || (b[1] != nodeVersion && b[1] != nodeVersion2) {
		return nil, fmt.Errorf("%w: bad magic or version %#x %#x", ErrBadNode, b[0], b[1])
	}
	if uint(b[2]) != shift {
		return nil, fmt.Errorf("%w: fanout 2^%d, tree uses 2^%d", ErrBadNode, b[2], shift)
	}
	if int(b[3]) > maxLevel {
		return nil, fmt.Errorf("%w: level %d above %d", ErrBadNode, b[3], maxLevel)
	}
	n := popcount(b[headerSize : headerSize+f/8])
	if n == 0 {
		return nil, fmt.Errorf("%w: empty node", ErrBadNode)
	}
	if b[1] == nodeVersion2 {
		return validate2(b, f, n)
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

// validate2 checks the rest of a format 2 leaf with n present slots.
func validate2(b []byte, f, n int) (node, error) {
	if b[3] != 0 {
		return nil, fmt.Errorf("%w: format 2 node at level %d", ErrBadNode, b[3])
	}
	if len(b) < headerSize+f/4 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a format 2 header", ErrBadNode, len(b))
	}
	pres, ext := b[headerSize:headerSize+f/8], b[headerSize+f/8:headerSize+f/4]
	for i := range ext {
		if ext[i]&^pres[i] != 0 {
			return nil, fmt.Errorf("%w: extent bit on an empty slot", ErrBadNode)
		}
	}
	e := popcount(ext)
	if e == 0 {
		return nil, fmt.Errorf("%w: format 2 leaf without extents", ErrBadNode)
	}
	if len(b) != headerSize+f/4+n*chunkstore.RefSize+e*extSize {
		return nil, fmt.Errorf("%w: %d bytes for %d entries, %d in extents", ErrBadNode, len(b), n, e)
	}
	var err error
	node(b).eachEntry(f, func(slot int, en Entry) bool {
		if en.Ref.IsZero() {
			err = fmt.Errorf("%w: zero ref in a present slot", ErrBadNode)
		} else if cerr := en.check(); cerr != nil {
			err = fmt.Errorf("%w: slot %d: %v", ErrBadNode, slot, cerr)
		}
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return node(b), nil
}

// encode builds the interior node of level from a dense slot array; it
// returns nil when every slot is empty.
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

// encodeLeaf builds the leaf of a dense entry array: format 1 when no
// entry is in an extent, else format 2. It returns nil when every slot is
// empty.
func encodeLeaf(shift uint, slots []Entry) []byte {
	f := 1 << shift
	n, e := 0, 0
	for i := range slots {
		if !slots[i].IsZero() {
			n++
			if slots[i].InExtent() {
				e++
			}
		}
	}
	if n == 0 {
		return nil
	}
	if e == 0 {
		rp := scratchRefs(f)
		defer putScratch(&refScratch, rp)
		refs := *rp
		for i := range slots {
			refs[i] = slots[i].Ref
		}
		return encode(shift, 0, refs)
	}
	b := make([]byte, headerSize+f/4+n*chunkstore.RefSize+e*extSize)
	b[0], b[1], b[2], b[3] = nodeMagic, nodeVersion2, byte(shift), 0
	off := headerSize + f/4
	for i := range slots {
		s := &slots[i]
		if s.IsZero() {
			continue
		}
		b[headerSize+i/8] |= 1 << (i % 8)
		off += copy(b[off:], s.Ref[:])
		if !s.InExtent() {
			continue
		}
		b[headerSize+f/8+i/8] |= 1 << (i % 8)
		off += copy(b[off:], s.Ext[:])
		binary.LittleEndian.PutUint16(b[off:], s.Slot)
		binary.LittleEndian.PutUint16(b[off+2:], s.Blocks)
		off += 4
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

// expandEntries writes the leaf n's entries into the dense array dst (len F).
func (n node) expandEntries(f int, dst []Entry) {
	clear(dst)
	n.eachEntry(f, func(slot int, e Entry) bool {
		dst[slot] = e
		return true
	})
}
