// Package blob stores data of any size in a chunk store: the data is cut
// into chunks and described by a manifest chunk, whose Ref names the blob.
// Huge blobs get a tree of manifests. A blob of one chunk is just that chunk.
//
// # Manifest format
//
//	0  "ZOSBLOB\x01"  magic and version (8 bytes)
//	8  level   u8     1: entries are data chunks; n > 1: manifests of level n-1
//	9  0,0,0          reserved
//	12 total   u64    bytes of the blob under this manifest
//	20 count   u32    entries
//	24 entries        count x (ref [32]byte, size u64: bytes under the entry)
//
// Little endian. A manifest is canonical: sizes are positive and add up to
// total, levels at most MaxLevel, nothing trails the entries. A chunk is a
// manifest exactly when it decodes as one; a one-chunk blob whose data
// happens to start with the magic is therefore stored behind a one-entry
// manifest, so raw data is never mistaken for a manifest.
//
// # Usage
//
//	ref, err := blob.Write(ctx, store, file, func(n int64) { bar.Set64(n) })
//	r, err := blob.Open(ctx, store, ref) // io.ReadSeeker, io.ReaderAt
//	err = blob.Refs(ctx, store, ref, mark) // every chunk of the blob, for GC
package blob

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/zosproject/zos/chunkstore"
)

// Magic starts every manifest.
const Magic = "ZOSBLOB\x01"

const (
	headerSize = 24
	entrySize  = chunkstore.RefSize + 8
	// MaxLevel bounds manifest nesting (104857^8 chunks is plenty).
	MaxLevel = 8
	// MaxFanOut is the most entries a manifest chunk can hold.
	MaxFanOut = (chunkstore.MaxChunkSize - headerSize) / entrySize
)

// ErrManifest: a chunk that should be a manifest is not a valid one.
var ErrManifest = errors.New("blob: bad manifest")

// Entry is one child of a manifest.
type Entry struct {
	Ref  chunkstore.Ref
	Size int64
}

// Manifest is a decoded manifest chunk.
type Manifest struct {
	Level   int
	Total   int64
	Entries []Entry
}

// Encode returns the manifest chunk.
func (m Manifest) Encode() []byte {
	b := make([]byte, headerSize, headerSize+entrySize*len(m.Entries))
	copy(b, Magic)
	b[8] = byte(m.Level)
	binary.LittleEndian.PutUint64(b[12:], uint64(m.Total))
	binary.LittleEndian.PutUint32(b[20:], uint32(len(m.Entries)))
	for _, e := range m.Entries {
		b = append(b, e.Ref[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Size))
	}
	return b
}

// IsManifest reports whether chunk is a manifest (starts with the magic).
// Use DecodeManifest to also validate it.
func IsManifest(chunk []byte) bool { return bytes.HasPrefix(chunk, []byte(Magic)) }

// DecodeManifest decodes and validates a manifest chunk.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) < headerSize || !IsManifest(b) {
		return m, fmt.Errorf("%w: no manifest header", ErrManifest)
	}
	m.Level = int(b[8])
	if m.Level < 1 || m.Level > MaxLevel {
		return m, fmt.Errorf("%w: level %d", ErrManifest, m.Level)
	}
	if b[9] != 0 || b[10] != 0 || b[11] != 0 {
		return m, fmt.Errorf("%w: reserved bytes set", ErrManifest)
	}
	total := binary.LittleEndian.Uint64(b[12:])
	count := binary.LittleEndian.Uint32(b[20:])
	if total > 1<<62 {
		return m, fmt.Errorf("%w: total %d", ErrManifest, total)
	}
	if uint64(len(b)-headerSize) != uint64(count)*entrySize {
		return m, fmt.Errorf("%w: %d entries in %d bytes", ErrManifest, count, len(b)-headerSize)
	}
	m.Total = int64(total)
	m.Entries = make([]Entry, count)
	var sum uint64
	for i := range m.Entries {
		off := headerSize + i*entrySize
		copy(m.Entries[i].Ref[:], b[off:])
		size := binary.LittleEndian.Uint64(b[off+chunkstore.RefSize:])
		if size == 0 || size > 1<<62 {
			return m, fmt.Errorf("%w: entry %d has size %d", ErrManifest, i, size)
		}
		if m.Level == 1 && size > chunkstore.MaxChunkSize {
			return m, fmt.Errorf("%w: data entry %d of %d bytes", ErrManifest, i, size)
		}
		m.Entries[i].Size = int64(size)
		sum += size
		if sum > total {
			return m, fmt.Errorf("%w: entry sizes exceed the total %d", ErrManifest, total)
		}
	}
	if sum != total {
		return m, fmt.Errorf("%w: entry sizes add up to %d, total says %d", ErrManifest, sum, total)
	}
	return m, nil
}

// Options tune Write and Open. The zero value uses the defaults.
type Options struct {
	// ChunkSize of the data chunks. Default chunkstore.MaxChunkSize.
	ChunkSize int
	// FanOut is the most entries per manifest. Default MaxFanOut.
	FanOut int
	// Parallel chunk puts (Write) or prefetches (readahead). Default 4.
	Parallel int
}

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 || o.ChunkSize > chunkstore.MaxChunkSize {
		o.ChunkSize = chunkstore.MaxChunkSize
	}
	if o.FanOut < 2 || o.FanOut > MaxFanOut {
		o.FanOut = MaxFanOut
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	return o
}

// Write stores everything src yields and returns the blob's Ref. progress,
// if not nil, is called with the number of bytes stored so far, in order,
// from one goroutine at a time.
func Write(ctx context.Context, r chunkstore.Receiver, src io.Reader, progress func(n int64)) (chunkstore.Ref, error) {
	return Options{}.Write(ctx, r, src, progress)
}

// Write is the package Write with these options.
func (o Options) Write(ctx context.Context, r chunkstore.Receiver, src io.Reader, progress func(n int64)) (chunkstore.Ref, error) {
	o = o.withDefaults()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	type slot struct {
		entry Entry
		done  chan error
	}
	slots := make(chan *slot, o.Parallel)
	sem := make(chan struct{}, o.Parallel)
	var entries []Entry
	var written int64
	var firstErr error
	collected := make(chan struct{})
	// The collector waits for puts in order, so entries and progress are
	// in order.
	go func() {
		defer close(collected)
		for s := range slots {
			err := <-s.done
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel(err)
				}
				continue
			}
			entries = append(entries, s.entry)
			written += s.entry.Size
			if progress != nil && firstErr == nil {
				progress(written)
			}
		}
	}()
	var readErr error
	var single []byte
	submit := func(data []byte) bool {
		s := &slot{entry: Entry{Size: int64(len(data))}, done: make(chan error, 1)}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		slots <- s
		go func() {
			defer func() { <-sem }()
			ref, err := r.Put(ctx, data)
			s.entry.Ref = ref
			s.done <- err
		}()
		return true
	}
	// read returns the next chunk and whether the source is exhausted.
	read := func() ([]byte, bool, error) {
		buf := make([]byte, o.ChunkSize)
		n, err := io.ReadFull(src, buf)
		switch err {
		case nil:
			return buf, false, nil
		case io.EOF, io.ErrUnexpectedEOF:
			return buf[:n], true, nil
		}
		return nil, true, fmt.Errorf("blob: reading the source: %w", err)
	}
	// One chunk of lookahead: a blob that fits one chunk is that chunk.
	cur, eof, err := read()
	var next []byte
	if err == nil && !eof {
		next, eof, err = read()
	}
	if err != nil {
		readErr = err
	} else if eof && len(next) == 0 && !IsManifest(cur) {
		single = cur
	} else {
		for first := true; ; first = false {
			if !first {
				next = nil
				if !eof {
					if next, eof, err = read(); err != nil {
						readErr = err
						break
					}
				}
			}
			if len(cur) > 0 && !submit(cur) {
				break
			}
			if len(next) == 0 && eof {
				break
			}
			cur = next
		}
	}
	close(slots)
	<-collected
	if readErr != nil {
		return chunkstore.Ref{}, readErr
	}
	if firstErr != nil {
		return chunkstore.Ref{}, firstErr
	}
	if err := context.Cause(ctx); err != nil {
		return chunkstore.Ref{}, err
	}
	if single != nil {
		ref, err := r.Put(ctx, single)
		if err == nil && progress != nil {
			progress(int64(len(single)))
		}
		return ref, err
	}
	if len(entries) == 0 {
		// Empty input that began as a manifest-looking read cannot happen;
		// an empty blob is the empty chunk.
		return r.Put(ctx, nil)
	}
	// Build the manifest tree bottom up.
	level := 1
	for {
		var next []Entry
		for i := 0; i < len(entries); i += o.FanOut {
			part := entries[i:min(i+o.FanOut, len(entries))]
			m := Manifest{Level: level, Entries: part}
			for _, e := range part {
				m.Total += e.Size
			}
			ref, err := r.Put(ctx, m.Encode())
			if err != nil {
				return chunkstore.Ref{}, err
			}
			next = append(next, Entry{Ref: ref, Size: m.Total})
		}
		if len(next) == 1 {
			return next[0].Ref, nil
		}
		if level == MaxLevel {
			return chunkstore.Ref{}, fmt.Errorf("%w: blob too large for %d manifest levels", chunkstore.ErrTooLarge, MaxLevel)
		}
		entries = next
		level++
	}
}

// leaf is one data chunk of an open blob.
type leaf struct {
	ref  chunkstore.Ref
	off  int64
	size int64
}

// Reader reads a blob. ReadAt is safe for concurrent use; Read and Seek
// share a position and are not.
type Reader struct {
	ctx    context.Context
	f      chunkstore.Fetcher
	ref    chunkstore.Ref
	size   int64
	leaves []leaf
	single []byte // a one-chunk blob
	opts   Options

	pos int64

	mu    sync.Mutex
	cache map[int]*fetch // leaf index -> fetched (or in flight) chunk
	order []int
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// Open opens the blob ref. The context bounds every later read.
func Open(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref) (*Reader, error) {
	return Options{}.Open(ctx, f, ref)
}

// Open is the package Open with these options (Parallel is the readahead
// depth).
func (o Options) Open(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref) (*Reader, error) {
	o = o.withDefaults()
	root, err := f.Fetch(ctx, ref)
	if err != nil {
		return nil, err
	}
	r := &Reader{ctx: ctx, f: f, ref: ref, opts: o, cache: map[int]*fetch{}}
	if !IsManifest(root) {
		r.single, r.size = root, int64(len(root))
		return r, nil
	}
	m, err := DecodeManifest(root)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", ref.Short(), err)
	}
	r.size = m.Total
	if err := r.flatten(ctx, m, 0); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) flatten(ctx context.Context, m Manifest, off int64) error {
	for _, e := range m.Entries {
		if m.Level == 1 {
			r.leaves = append(r.leaves, leaf{ref: e.Ref, off: off, size: e.Size})
			off += e.Size
			continue
		}
		b, err := r.f.Fetch(ctx, e.Ref)
		if err != nil {
			return err
		}
		child, err := DecodeManifest(b)
		if err != nil {
			return fmt.Errorf("blob %s: manifest %s: %w", r.ref.Short(), e.Ref.Short(), err)
		}
		if child.Level != m.Level-1 || child.Total != e.Size {
			return fmt.Errorf("%w: manifest %s is level %d of %d bytes, parent says level %d of %d", ErrManifest, e.Ref.Short(), child.Level, child.Total, m.Level-1, e.Size)
		}
		if err := r.flatten(ctx, child, off); err != nil {
			return err
		}
		off += e.Size
	}
	return nil
}

// Size is the blob's length.
func (r *Reader) Size() int64 { return r.size }

// Chunks is the number of data chunks.
func (r *Reader) Chunks() int {
	if r.single != nil {
		return 1
	}
	return len(r.leaves)
}

// get returns leaf i's data, fetching it (once) if needed.
func (r *Reader) get(i int) ([]byte, error) {
	r.mu.Lock()
	f := r.cache[i]
	if f == nil {
		f = r.start(i)
	}
	r.mu.Unlock()
	<-f.done
	return f.data, f.err
}

// start begins fetching leaf i (r.mu held) and evicts old entries.
func (r *Reader) start(i int) *fetch {
	f := &fetch{done: make(chan struct{})}
	r.cache[i] = f
	r.order = append(r.order, i)
	for len(r.order) > 2*r.opts.Parallel+2 {
		delete(r.cache, r.order[0])
		r.order = r.order[1:]
	}
	l := r.leaves[i]
	go func() {
		defer close(f.done)
		data, err := r.f.Fetch(r.ctx, l.ref)
		if err == nil && int64(len(data)) != l.size {
			err = fmt.Errorf("%w: blob %s: chunk %s is %d bytes, manifest says %d", chunkstore.ErrCorrupt, r.ref.Short(), l.ref.Short(), len(data), l.size)
		}
		f.data, f.err = data, err
	}()
	return f
}

// prefetch starts fetching the leaves after i.
func (r *Reader) prefetch(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for j := i + 1; j <= i+r.opts.Parallel && j < len(r.leaves); j++ {
		if r.cache[j] == nil {
			r.start(j)
		}
	}
}

// ReadAt implements io.ReaderAt.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob: negative offset %d", off)
	}
	if off >= r.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	if r.single != nil {
		n := copy(p, r.single[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	// Binary search the leaf holding off.
	lo, hi := 0, len(r.leaves)
	for lo < hi {
		mid := (lo + hi) / 2
		if r.leaves[mid].off+r.leaves[mid].size <= off {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	n := 0
	for i := lo; n < len(p) && i < len(r.leaves); i++ {
		data, err := r.get(i)
		if err != nil {
			return n, err
		}
		l := r.leaves[i]
		n += copy(p[n:], data[off+int64(n)-l.off:])
		if n < len(p) || i+1 < len(r.leaves) {
			r.prefetch(i)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read implements io.Reader (with readahead).
func (r *Reader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	n, err := r.ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return r.pos, fmt.Errorf("blob: bad whence %d", whence)
	}
	if offset < 0 {
		return r.pos, fmt.Errorf("blob: seek to negative offset %d", offset)
	}
	r.pos = offset
	return offset, nil
}

// Refs calls fn with ref and, if it is a manifest, every chunk of the blob
// below it (manifests and data chunks), depth first. Only manifests are
// fetched. It is how garbage collection marks a blob.
func Refs(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref, fn func(chunkstore.Ref) error) error {
	if err := fn(ref); err != nil {
		return err
	}
	b, err := f.Fetch(ctx, ref)
	if err != nil {
		return err
	}
	if !IsManifest(b) {
		return nil
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return fmt.Errorf("blob %s: %w", ref.Short(), err)
	}
	return walk(ctx, f, m, fn)
}

func walk(ctx context.Context, f chunkstore.Fetcher, m Manifest, fn func(chunkstore.Ref) error) error {
	for _, e := range m.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e.Ref); err != nil {
			return err
		}
		if m.Level == 1 {
			continue
		}
		b, err := f.Fetch(ctx, e.Ref)
		if err != nil {
			return err
		}
		child, err := DecodeManifest(b)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", e.Ref.Short(), err)
		}
		if err := walk(ctx, f, child, fn); err != nil {
			return err
		}
	}
	return nil
}
