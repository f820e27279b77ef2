// Package blob stores byte strings larger than one chunk (flist files) in a
// chunk store: the data is cut into 1 MiB pieces plus a manifest chunk that
// lists them, and the manifest's Ref names the whole blob.
//
// It is the flist packages' private stand-in until chunkstore/blob exists;
// the manifest layout is "zosblob1", total size (8 bytes big endian), then
// per piece its Ref (32 bytes) and size (4 bytes big endian).
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

// PieceSize is the size of the data pieces.
const PieceSize = 1 << 20

const magic = "zosblob1"

const entrySize = chunkstore.RefSize + 4

// ErrNotBlob: a chunk that is not a blob manifest.
var ErrNotBlob = errors.New("blob: not a blob manifest")

// Put stores everything read from r and returns the blob's Ref and size.
func Put(ctx context.Context, store chunkstore.Receiver, r io.Reader) (chunkstore.Ref, int64, error) {
	man := bytes.NewBufferString(magic)
	man.Write(make([]byte, 8))
	buf := make([]byte, PieceSize)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			ref, perr := store.Put(ctx, buf[:n])
			if perr != nil {
				return chunkstore.Ref{}, 0, fmt.Errorf("blob: store piece: %w", perr)
			}
			man.Write(ref[:])
			man.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
			total += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return chunkstore.Ref{}, 0, fmt.Errorf("blob: read: %w", err)
		}
	}
	m := man.Bytes()
	if len(m) > chunkstore.MaxChunkSize {
		return chunkstore.Ref{}, 0, fmt.Errorf("blob: %d bytes is too large for one manifest", total)
	}
	binary.BigEndian.PutUint64(m[len(magic):], uint64(total))
	ref, err := store.Put(ctx, m)
	if err != nil {
		return chunkstore.Ref{}, 0, fmt.Errorf("blob: store manifest: %w", err)
	}
	return ref, total, nil
}

type piece struct {
	ref chunkstore.Ref
	off int64
	n   int
}

// Reader reads a blob in place, fetching (and verifying) pieces on demand
// and keeping the most recent ones. Safe for concurrent use.
type Reader struct {
	ctx    context.Context
	fetch  chunkstore.Fetcher
	size   int64
	pieces []piece

	mu    sync.Mutex
	cache map[chunkstore.Ref][]byte
	order []chunkstore.Ref
}

// Open reads the manifest of blob ref. ctx bounds every later fetch.
func Open(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref) (*Reader, error) {
	m, err := f.Fetch(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", ref.Short(), err)
	}
	if chunkstore.Sum(m) != ref {
		return nil, fmt.Errorf("blob %s: %w: manifest does not match its ref", ref.Short(), chunkstore.ErrCorrupt)
	}
	if len(m) < len(magic)+8 || string(m[:len(magic)]) != magic || (len(m)-len(magic)-8)%entrySize != 0 {
		return nil, fmt.Errorf("blob %s: %w", ref.Short(), ErrNotBlob)
	}
	r := &Reader{ctx: ctx, fetch: f, size: int64(binary.BigEndian.Uint64(m[len(magic):])), cache: map[chunkstore.Ref][]byte{}}
	var off int64
	for e := m[len(magic)+8:]; len(e) > 0; e = e[entrySize:] {
		var p piece
		copy(p.ref[:], e)
		p.n = int(binary.BigEndian.Uint32(e[chunkstore.RefSize:]))
		p.off = off
		if p.n <= 0 || p.n > chunkstore.MaxChunkSize {
			return nil, fmt.Errorf("blob %s: %w: piece of %d bytes", ref.Short(), chunkstore.ErrCorrupt, p.n)
		}
		off += int64(p.n)
		r.pieces = append(r.pieces, p)
	}
	if off != r.size {
		return nil, fmt.Errorf("blob %s: %w: pieces cover %d of %d bytes", ref.Short(), chunkstore.ErrCorrupt, off, r.size)
	}
	return r, nil
}

// Size returns the blob's size.
func (r *Reader) Size() int64 { return r.size }

func (r *Reader) piece(p piece) ([]byte, error) {
	r.mu.Lock()
	b, ok := r.cache[p.ref]
	r.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := r.fetch.Fetch(r.ctx, p.ref)
	if err != nil {
		return nil, fmt.Errorf("blob piece %s: %w", p.ref.Short(), err)
	}
	if len(b) != p.n || chunkstore.Sum(b) != p.ref {
		return nil, fmt.Errorf("blob piece %s: %w", p.ref.Short(), chunkstore.ErrCorrupt)
	}
	r.mu.Lock()
	if _, ok := r.cache[p.ref]; !ok {
		r.cache[p.ref] = b
		r.order = append(r.order, p.ref)
		if len(r.order) > 8 {
			delete(r.cache, r.order[0])
			r.order = r.order[1:]
		}
	}
	r.mu.Unlock()
	return b, nil
}

// ReadAt implements io.ReaderAt.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob: negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.size {
			return n, io.EOF
		}
		// Binary search for the piece holding pos.
		lo, hi := 0, len(r.pieces)-1
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if r.pieces[mid].off <= pos {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		pc := r.pieces[lo]
		b, err := r.piece(pc)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[pos-pc.off:])
	}
	return n, nil
}

// ReadAll fetches the whole blob.
func (r *Reader) ReadAll() ([]byte, error) {
	out := make([]byte, r.size)
	_, err := r.ReadAt(out, 0)
	if err == io.EOF {
		err = nil
	}
	return out, err
}
