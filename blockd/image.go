package blockd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/gc"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// Image is a raw, read-only view of a vdisk head (the current head or a
// snapshot), resolved when it was made: export streams it.
type Image struct {
	Name      string // vdisk
	Snap      string // "" for the head
	Size      int64
	BlockSize int64
	Head      chunkstore.Ref

	s     *Service
	store chunkstore.Store
	tree  *tree.Tree
}

// Image resolves name (and snap, when not empty) to an Image. Exporting
// the current head of a vdisk attached read-write on this node commits it
// first; one attached on another node is exported as of its last commit.
func (s *Service) Image(ctx context.Context, name, snap string) (*Image, error) {
	if snap == "" {
		if err := s.settle(ctx, name); err != nil {
			return nil, fmt.Errorf("blockd: export %s: %w", name, err)
		}
	}
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return nil, err
	}
	head, size := v.Head, v.Size
	if snap != "" {
		sn := v.Snapshot(snap)
		if sn == nil {
			return nil, &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s has no snapshot %q", name, snap)}
		}
		head, size = sn.Head, sn.Size
	}
	st, tr, err := s.storeFor(v.Pool, v.Type)
	if err != nil {
		return nil, err
	}
	return &Image{Name: name, Snap: snap, Size: size, BlockSize: v.BlockSize, Head: head, s: s, store: st, tree: tr}, nil
}

// WriteTo writes the image's Size bytes to w: allocated blocks fetched in
// parallel (bounded read-ahead) and written in order, holes as zeroes
// without touching the store. progress, if set, gets the bytes written so
// far after each write.
func (im *Image) WriteTo(ctx context.Context, w io.Writer, progress func(int64)) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bs := im.BlockSize
	nblocks := uint64((im.Size + bs - 1) / bs)
	window := 4 * im.s.cfg.Parallelism

	type job struct {
		idx  uint64
		ent  tree.Entry
		data []byte
		err  error
		done chan struct{}
	}
	order := make(chan *job, window)
	work := make(chan *job, window)
	var walkErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the walker
		defer wg.Done()
		defer close(order)
		defer close(work)
		walkErr = im.tree.Walk(ctx, im.Head, 0, nblocks, func(i uint64, e tree.Entry) error {
			j := &job{idx: i, ent: e, done: make(chan struct{})}
			if !fetchable(e.Ref) {
				close(j.done)
			} else {
				select {
				case work <- j:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			select {
			case order <- j:
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		})
	}()
	for k := 0; k < im.s.cfg.Parallelism; k++ {
		wg.Add(1)
		go func() { // fetchers
			defer wg.Done()
			for j := range work {
				if b, ok := im.s.blocks.Peek(j.ent.Ref); ok {
					j.data = b
				} else {
					// A block of an extent is one ranged read.
					var got [][]byte
					if got, j.err = readEntries(ctx, im.store, bs, []tree.Entry{j.ent}); j.err == nil {
						j.data = got[0]
					}
				}
				if j.err == nil && int64(len(j.data)) > bs {
					j.err = fmt.Errorf("%w: block %s is %d bytes", ErrCorruptBlock, j.ent.Ref.Short(), len(j.data))
				}
				close(j.done)
			}
		}()
	}
	defer wg.Wait()
	defer cancel()

	var pos int64
	write := func(b []byte) error {
		n, err := w.Write(b)
		pos += int64(n)
		if progress != nil {
			progress(pos)
		}
		return err
	}
	writeZeroes := func(n int64) error {
		for n > 0 {
			k := min(n, int64(len(zeroes)))
			if err := write(zeroes[:k]); err != nil {
				return err
			}
			n -= k
		}
		return nil
	}
	for j := range order {
		start := int64(j.idx) * bs
		if err := writeZeroes(start - pos); err != nil {
			return pos, err
		}
		select {
		case <-j.done:
		case <-ctx.Done():
			return pos, ctx.Err()
		}
		if j.err != nil {
			return pos, fmt.Errorf("blockd: export %s: block %d: %w", im.Name, j.idx, j.err)
		}
		end := min(start+bs, im.Size)
		data := j.data[:min(int64(len(j.data)), end-start)]
		if err := write(data); err != nil {
			return pos, err
		}
		if err := writeZeroes(end - start - int64(len(data))); err != nil {
			return pos, err
		}
	}
	wg.Wait()
	if walkErr != nil {
		return pos, fmt.Errorf("blockd: export %s: %w", im.Name, walkErr)
	}
	if err := writeZeroes(im.Size - pos); err != nil {
		return pos, err
	}
	return pos, nil
}

// importBatch is the number of blocks an import applies to its tree at once.
const importBatch = 16384

// Import replaces the content of vdisk name with the raw stream r: the
// stream's bytes become the disk's first bytes, the rest reads as zeroes.
// All-zero blocks are skipped (thin), blocks are stored in parallel and
// the tree is built in batches; the head is committed once, at the end,
// under the vdisk's lease (so the vdisk must not be attached read-write).
// A stream longer than the vdisk fails before anything is committed.
func (s *Service) Import(ctx context.Context, name string, r io.Reader, progress func(int64)) error {
	return s.withLease(ctx, name, "import", func(ctx context.Context, epoch uint64, v *fsm.VDisk) error {
		st, tr, err := s.storeFor(v.Pool, v.Type)
		if err != nil {
			return err
		}
		start := time.Now()
		root, n, err := s.buildTree(ctx, st, tr, v, r, progress)
		if err != nil {
			return err
		}
		if err := raft.Exec(ctx, s.cfg.Control, fsm.VDiskHead, fsm.VDiskHeadArgs{Name: name, Epoch: epoch, Old: v.Head, New: root}); err != nil {
			return err
		}
		s.log.Info("vdisk imported", "vdisk", name, "bytes", n, "head", root.Short(), "took", time.Since(start).Round(time.Millisecond))
		return nil
	})
}

func (s *Service) buildTree(ctx context.Context, st chunkstore.Store, tr *tree.Tree, v *fsm.VDisk, r io.Reader, progress func(int64)) (chunkstore.Ref, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bs := v.BlockSize
	par := s.cfg.Parallelism
	free := make(chan []byte, 2*par)
	for i := 0; i < 2*par; i++ {
		free <- make([]byte, bs)
	}
	type job struct {
		idx  uint64
		data []byte
	}
	work := make(chan job)
	var (
		mu      sync.Mutex
		changes []tree.Change
		wg      sync.WaitGroup
		stored  atomic.Int64
	)
	for k := 0; k < par; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				data := trimZeros(j.data)
				ref, err := st.Put(ctx, data)
				if err != nil {
					cancel(fmt.Errorf("blockd: import %s: store block %d: %w", v.Name, j.idx, err))
				} else {
					stored.Add(int64(len(data)))
					mu.Lock()
					changes = append(changes, tree.Change{Index: j.idx, Entry: tree.Entry{Ref: ref}})
					mu.Unlock()
				}
				free <- j.data[:bs] // after the change is recorded: drain counts buffers
			}
		}()
	}
	var root chunkstore.Ref
	// drain waits for the stored blocks and applies them to the tree.
	pending := 0
	drain := func() error {
		// Wait until every buffer is back: all puts so far are done.
		bufs := make([][]byte, 0, cap(free))
		for len(bufs) < cap(free) {
			select {
			case b := <-free:
				bufs = append(bufs, b)
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		for _, b := range bufs {
			free <- b
		}
		mu.Lock()
		batch := changes
		changes = nil
		mu.Unlock()
		if err := context.Cause(ctx); err != nil {
			return err
		}
		slices.SortFunc(batch, func(a, b tree.Change) int { return cmp.Compare(a.Index, b.Index) })
		var err error
		root, err = tr.Update(ctx, root, batch)
		pending = 0
		return err
	}
	finish := func(err error) (chunkstore.Ref, int64, error) {
		close(work)
		wg.Wait()
		s.m.storedBytes.Add(float64(stored.Load()))
		return chunkstore.Ref{}, 0, err
	}
	var total int64
	for idx := uint64(0); ; idx++ {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return finish(context.Cause(ctx))
		}
		n, err := io.ReadFull(r, buf)
		total += int64(n)
		if progress != nil && n > 0 {
			progress(total)
		}
		if n > 0 && total > v.Size {
			free <- buf
			return finish(invalidf("image of vdisk %s is larger than the vdisk (%d bytes); resize it first", v.Name, v.Size))
		}
		if n > 0 && !isZero(buf[:n]) {
			clear(buf[n:])
			select {
			case work <- job{idx, buf}:
				pending++
			case <-ctx.Done():
				return finish(context.Cause(ctx))
			}
		} else {
			free <- buf
		}
		if pending >= importBatch {
			if err := drain(); err != nil {
				return finish(err)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return finish(fmt.Errorf("blockd: import %s: read image: %w", v.Name, err))
		}
	}
	if err := drain(); err != nil {
		return finish(err)
	}
	close(work)
	wg.Wait()
	s.m.storedBytes.Add(float64(stored.Load()))
	return root, total, nil
}

// Range is a changed byte range of a diff (defined in blockd/vdiskapi).
type Range = vdiskapi.Range

// Diff calls fn, in offset order, for the byte ranges whose content differs
// between two versions of vdisk name: from and to are snapshot names, ""
// meaning the current head for to and the empty disk for from. Equal
// subtrees are skipped without being read, so the cost follows the size of
// the change. Adjacent changed blocks are merged into one Range.
func (s *Service) Diff(ctx context.Context, name, from, to string, fn func(Range) error) error {
	if to == "" {
		if err := s.settle(ctx, name); err != nil {
			return err
		}
	}
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return err
	}
	resolve := func(snap string, head chunkstore.Ref, size int64) (chunkstore.Ref, int64, error) {
		if snap == "" {
			return head, size, nil
		}
		sn := v.Snapshot(snap)
		if sn == nil {
			return chunkstore.Ref{}, 0, &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s has no snapshot %q", name, snap)}
		}
		return sn.Head, sn.Size, nil
	}
	a, _, err := resolve(from, chunkstore.Ref{}, 0)
	if err != nil {
		return err
	}
	b, bsize, err := resolve(to, v.Head, v.Size)
	if err != nil {
		return err
	}
	_, tr, err := s.storeFor(v.Pool, v.Type)
	if err != nil {
		return err
	}
	bs := v.BlockSize
	var cur *Range
	emit := func() error {
		if cur == nil {
			return nil
		}
		r := *cur
		cur = nil
		if r.Offset >= bsize {
			return nil
		}
		r.Length = min(r.Length, bsize-r.Offset)
		return fn(r)
	}
	err = tr.Diff(ctx, a, b, func(idx uint64, _, nw chunkstore.Ref) error {
		off := int64(idx) * bs
		zero := nw.IsZero() || nw == emptyRef
		if cur != nil && cur.Offset+cur.Length == off && cur.Zero == zero {
			cur.Length += bs
			return nil
		}
		if err := emit(); err != nil {
			return err
		}
		cur = &Range{Offset: off, Length: bs, Zero: zero}
		return nil
	})
	if err != nil {
		return err
	}
	return emit()
}

// Roots calls fn for every chunk reachable from the control plane's vdisk
// records: every head and snapshot head, and every tree node and block
// under them, plus the blocks that vdisks open on this node stored but did
// not commit yet. Subtrees shared between heads (snapshots, clones) are
// walked once. It is the blockd part of the chunk store's garbage-collection
// mark phase (see GCRoots); chunks written by other nodes' flushes in
// progress are protected by the collector's grace period, which must exceed
// Config.WritebackInterval + Config.FlushTimeout.
func (s *Service) Roots(ctx context.Context, fn func(chunkstore.Ref) error) error {
	type root struct {
		ref        chunkstore.Ref
		pool, typ  string
		vdisk, tag string
	}
	var roots []root
	err := s.cfg.Control.Read(ctx, func(st *fsm.State) error {
		for _, v := range st.SortedVDisks() {
			roots = append(roots, root{v.Head, v.Pool, v.Type, v.Name, "head"})
			for _, sn := range v.Snapshots {
				roots = append(roots, root{sn.Head, v.Pool, v.Type, v.Name, "@" + sn.Name})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Blocks stored by the open vdisks of this node but not yet under a
	// committed head (the collector's grace period protects those of
	// other nodes).
	for _, d := range s.openDisks() {
		for _, r := range d.pendingRefs() {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	seen := map[chunkstore.Ref]struct{}{}
	mark := func(r chunkstore.Ref) bool {
		if _, ok := seen[r]; ok {
			return true
		}
		seen[r] = struct{}{}
		return false
	}
	for _, r := range roots {
		if r.ref.IsZero() {
			continue
		}
		_, tr, err := s.storeFor(r.pool, r.typ)
		if err != nil {
			return err
		}
		err = tr.Refs(ctx, r.ref, mark, func(ref chunkstore.Ref, _ bool) error { return fn(ref) })
		if err != nil {
			return fmt.Errorf("blockd: roots of %s %s: %w", r.vdisk, r.tag, err)
		}
	}
	return nil
}

// GCRoots returns Roots as the chunk store collector's gc.Roots.
func (s *Service) GCRoots() gc.Roots {
	return gc.RootsFunc(func(ctx context.Context, _ chunkstore.Fetcher, mark func(chunkstore.Ref)) error {
		return s.Roots(ctx, func(r chunkstore.Ref) error { mark(r); return nil })
	})
}
