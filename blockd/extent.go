package blockd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
)

// Extents: the complete blocks of one aligned stretch written back
// together are stored as ONE chunk, the blocks back to back (each zero
// padded to the block size), contiguous or not, and each block's leaf
// entry names its content Ref (its identity, as for a block stored alone)
// and its place in the extent (tree.Entry). Large I/O then costs per
// byte, not per block: one chunk to hash, code, frame and index per run
// instead of one per block; random writes cost one chunk per stretch
// written back. A block alone in its stretch keeps a chunk of its own.
// The cleaner (clean.go) bounds the space partly overwritten extents
// keep. Reads take
// a whole extent when a good part of it is wanted, else ranged reads of
// just the blocks (chunkstore.FetchRanges), each verified against its
// content Ref.

// DefaultExtentBytes is Config.ExtentBytes's default: the largest chunk a
// run of contiguous dirty blocks is written back as. 1 MiB: large enough
// that a sequential stream costs per byte (one chunk per 1 MiB instead of
// 64), small enough that a whole-extent read is one readahead window and
// a partial overwrite strands little. Random reads of an extent are
// ranged reads of its blocks (the erasure store reads parts of shards),
// so they cost what a block stored alone costs.
const DefaultExtentBytes = 1 << 20

// stretchOf is the first block of the aligned stretch of n blocks holding
// block idx. Extents never cross a stretch, so a vdisk written
// sequentially has its extents at the same aligned places whatever offset
// the writes started at, and readahead, whose pieces are aligned the same
// way, fetches each extent once (a piece that took a quarter of an extent
// straddling two pieces fetched it whole, and so did its neighbour: 1.6×
// the bytes of a sequential read).
func stretchOf(idx uint64, n int) uint64 { return idx - idx%uint64(n) }

// wholeExtentShare: a read that wants at least 1/wholeExtentShare of an
// extent's blocks fetches the extent whole (one verified chunk, k shard
// reads) rather than block ranges.
const wholeExtentShare = 4

// extentBlocks is how many blocks of the disk's size one extent holds (1:
// extents are off).
func (d *Disk) extentBlocks() int {
	return max(1, int(min(d.svc.cfg.ExtentBytes, chunkstore.MaxChunkSize)/d.bs))
}

// extentData lays blocks (complete contents, len bs, or nil for zeroes) out
// as an extent chunk: Blocks × bs bytes, in a recycled buffer (give it
// back with releaseExtent once the store returned: a fresh megabyte costs
// its page faults, which a sequential stream paid on every extent).
func extentData(blocks [][]byte, bs int64) []byte {
	n := int64(len(blocks)) * bs
	var out []byte
	if p, ok := extentBufs.Get().(*[]byte); ok && int64(cap(*p)) >= n {
		out = (*p)[:n]
	} else {
		out = make([]byte, n, max(n, DefaultExtentBytes))
	}
	for j, b := range blocks {
		dst := out[int64(j)*bs : int64(j+1)*bs]
		clear(dst[copy(dst, b):])
	}
	return out
}

// extentBufs holds extent buffers for reuse (*[]byte).
var extentBufs sync.Pool

// releaseExtent recycles an extent's buffer from extentData. Nothing may
// refer to it after (the chunk store does not retain what it was given
// once Put returns).
func releaseExtent(b []byte) {
	if cap(b) > 0 {
		extentBufs.Put(&b)
	}
}

// extentEntries names the blocks of an extent: entry j is block j's
// content Ref (as nameBlock: zero for zeroes, emptyRef for zeroes kept)
// and its place in the extent. Zero blocks get no place (nothing to read).
func extentEntries(ext chunkstore.Ref, refs []chunkstore.Ref) []tree.Entry {
	out := make([]tree.Entry, len(refs))
	for j, r := range refs {
		out[j] = tree.Entry{Ref: r}
		if fetchable(r) {
			out[j].Ext, out[j].Slot, out[j].Blocks = ext, uint16(j), uint16(len(refs))
		}
	}
	return out
}

// readEntries returns the content (trailing zeroes trimmed) of the blocks
// ents (each fetchable) from st, in one round: blocks stored alone and
// extents of which at least a quarter is wanted in one FetchMany
// (verified against their chunk Refs); the blocks of other extents in one
// FetchRanges, each block checked against its content Ref, and the extent
// read whole instead when its range fails or does not verify. Errors are
// FetchMany's: a *chunkstore.BatchError lists the positions not read.
func readEntries(ctx context.Context, st chunkstore.Fetcher, bs int64, ents []tree.Entry) ([][]byte, error) {
	out := make([][]byte, len(ents))
	errs := make([]error, len(ents))
	exts := map[chunkstore.Ref][]int{} // extent -> positions wanting it
	whole := map[chunkstore.Ref][]int{}
	// shared: extents read whole whose blocks keep the chunk's buffer, and
	// for each wanted slot the next wanted slot (or Blocks): the block's
	// slice reaches to it, so the cache counts the unwanted bytes after it.
	shared := map[chunkstore.Ref]map[uint16]uint16{}
	for i, e := range ents {
		if e.InExtent() {
			exts[e.Ext] = append(exts[e.Ext], i)
		} else {
			whole[e.Ref] = append(whole[e.Ref], i)
		}
	}
	var ranges []chunkstore.Range
	var rpos [][]int // positions each range covers, block by block from its start
	for ext, pos := range exts {
		e := ents[pos[0]]
		slots := map[uint16]bool{}
		for _, i := range pos {
			slots[ents[i].Slot] = true
		}
		if len(slots)*wholeExtentShare >= int(e.Blocks) {
			whole[ext] = append(whole[ext], pos...)
			if len(slots)*sharedExtentShare >= int(e.Blocks)*(sharedExtentShare-1) {
				shared[ext] = nextSlots(slots, e.Blocks)
			}
			continue
		}
		// One range per run of contiguous wanted slots.
		slices.SortFunc(pos, func(a, b int) int { return cmp.Compare(ents[a].Slot, ents[b].Slot) })
		for k := 0; k < len(pos); {
			first := ents[pos[k]].Slot
			last := first
			var covered []int
			for k < len(pos) && ents[pos[k]].Slot <= last+1 {
				last = ents[pos[k]].Slot
				covered = append(covered, pos[k])
				k++
			}
			ranges = append(ranges, chunkstore.Range{Ref: ext, Size: int(int64(e.Blocks) * bs),
				Off: int(int64(first) * bs), Len: int(int64(last-first+1) * bs)})
			rpos = append(rpos, covered)
		}
	}
	if len(ranges) > 0 {
		got, err := chunkstore.FetchRanges(ctx, st, ranges)
		var be *chunkstore.BatchError
		if err != nil && !errors.As(err, &be) {
			return nil, err
		}
		for r, rg := range ranges {
			ok := be == nil || rangeErr(be, r) == nil
			if ok {
				for _, i := range rpos[r] {
					e := ents[i]
					off := int64(e.Slot)*bs - int64(rg.Off)
					b := trimZeros(got[r][off : off+bs])
					if chunkstore.Sum(b) != e.Ref {
						ok = false
						break
					}
					if int64(rg.Len) == bs {
						out[i] = b // the range's own buffer: no second copy
					} else {
						out[i] = slices.Clone(b) // its own bytes, not pinning the range
					}
				}
			}
			if !ok { // read it whole, verified, with Fetch's repair
				whole[rg.Ref] = append(whole[rg.Ref], rpos[r]...)
			}
		}
	}
	if len(whole) > 0 {
		refs := make([]chunkstore.Ref, 0, len(whole))
		for r := range whole {
			refs = append(refs, r)
		}
		got, err := chunkstore.FetchMany(ctx, st, refs)
		var be *chunkstore.BatchError
		if err != nil && !errors.As(err, &be) {
			return nil, err
		}
		for k, r := range refs {
			var ferr error
			if be != nil {
				ferr = rangeErr(be, k)
			}
			for _, i := range whole[r] {
				if ferr != nil {
					errs[i] = ferr
					continue
				}
				end, share := shared[r][ents[i].Slot]
				out[i], errs[i] = blockOf(got[k], ents[i], bs, share, end)
			}
		}
	}
	return out, chunkstore.FetchErrors(out, errs)
}

// rangeErr is be's error for position i, or nil.
func rangeErr(be *chunkstore.BatchError, i int) error {
	if k, ok := slices.BinarySearch(be.Failed, i); ok {
		return be.Errs[k]
	}
	return nil
}

// sharedExtentShare: the blocks of an extent read whole keep slices of
// the chunk's buffer rather than copies when a read wants all but at most
// 1/sharedExtentShare of them (a sequential read wants them all; one
// after random writes, three quarters to seven eighths of an extent, the
// rest superseded by later blocks). Each block's slice reaches to the
// next wanted block (its capacity), so the block cache counts the bytes
// of the unwanted blocks after it; only those before the first wanted
// block stay allocated uncounted while a block of the extent is cached,
// at most a quarter of an extent. A copy of every block of every extent
// cost a tenth of a sequential read's CPU (the copy, and the fresh memory
// it needs); sharing at seven eighths instead of three quarters left the
// sequential read after random writes copying most blocks (its figures:
// docs/benchmarks.md, "Beyond the caches").
const sharedExtentShare = 4

// nextSlots maps each wanted slot of an extent of n blocks to the next
// wanted slot, or n for the last.
func nextSlots(slots map[uint16]bool, n uint16) map[uint16]uint16 {
	sorted := make([]uint16, 0, len(slots))
	for s := range slots {
		sorted = append(sorted, s)
	}
	slices.Sort(sorted)
	out := make(map[uint16]uint16, len(sorted))
	for j, s := range sorted {
		out[s] = n
		if j+1 < len(sorted) {
			out[s] = sorted[j+1]
		}
	}
	return out
}

// blockOf returns e's content from data, the verified chunk e.Chunk(): its
// own copy, or (share) a slice of data whose capacity ends where slot end
// starts (the next wanted block's, which nothing can then append into).
// Block buffers are never written once read.
func blockOf(data []byte, e tree.Entry, bs int64, share bool, end uint16) ([]byte, error) {
	if !e.InExtent() {
		if int64(len(data)) > bs {
			return nil, fmt.Errorf("%w: block %s is %d bytes, more than the block size %d", ErrCorruptBlock, e.Ref.Short(), len(data), bs)
		}
		return data, nil
	}
	if int64(len(data)) != int64(e.Blocks)*bs || e.Slot >= e.Blocks {
		return nil, fmt.Errorf("%w: extent %s is %d bytes, not %d blocks of %d", ErrCorruptBlock, e.Ext.Short(), len(data), e.Blocks, bs)
	}
	// The extent was verified against its Ref, and e came from a verified
	// node that was written with the block's Ref hashed from these bytes:
	// no second hash.
	b := trimZeros(data[int64(e.Slot)*bs : int64(e.Slot+1)*bs])
	if share {
		from := int64(e.Slot) * bs
		to := max(int64(end)*bs, int64(e.Slot+1)*bs)
		return data[from : from+int64(len(b)) : min(to, int64(len(data)))], nil
	}
	return slices.Clone(b), nil
}

// extentRun is an extent chunk being stored: its Ref and bytes.
type extentRun struct {
	ref  chunkstore.Ref
	data []byte
}

// nameRun names a run of complete blocks (ascending indexes of one
// stretch) and lays out the chunk that stores them: with at least two blocks to
// store, one extent (run is set); else the one block's own chunk (or
// nothing, for zeroes). ents[j] is block j's entry, datas[j] its trimmed
// content (for the block cache).
func nameRun(blocks []*dblock, bs int64) (ents []tree.Entry, datas [][]byte, chunk extentRun, inExtent bool) {
	refs := make([]chunkstore.Ref, len(blocks))
	datas = make([][]byte, len(blocks))
	stored := 0
	for j, b := range blocks {
		refs[j], datas[j] = nameBlock(b)
		if len(datas[j]) > 0 {
			stored++
		}
	}
	if stored < 2 {
		ents = make([]tree.Entry, len(blocks))
		for j, r := range refs {
			ents[j] = tree.Entry{Ref: r}
			if len(datas[j]) > 0 {
				chunk = extentRun{ref: r, data: datas[j]}
			}
		}
		return ents, datas, chunk, false
	}
	raw := make([][]byte, len(blocks))
	for j, b := range blocks {
		raw[j] = b.data
	}
	data := extentData(raw, bs)
	chunk = extentRun{ref: chunkstore.Sum(data), data: data}
	return extentEntries(chunk.ref, refs), datas, chunk, true
}
