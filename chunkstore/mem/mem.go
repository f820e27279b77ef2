// Package mem is an in-memory chunkstore.Store: a map guarded by a RWMutex.
// It is for tests, caches and tools; nothing survives the process. Fetch
// returns a copy; Put copies its input. Enumerate sorts the Refs on every
// call (O(n log n)), fine for the sizes it is meant for.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/zosproject/zos/chunkstore"
)

// Store is an in-memory chunkstore.Store. The zero value is not usable; call
// New.
type Store struct {
	mu     sync.RWMutex
	chunks map[chunkstore.Ref][]byte
	bytes  int64
}

// New returns an empty Store.
func New() *Store { return &Store{chunks: map[chunkstore.Ref][]byte{}} }

var _ chunkstore.Store = (*Store)(nil)

// Put stores a copy of data.
func (s *Store) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	if len(data) > chunkstore.MaxChunkSize {
		return chunkstore.Ref{}, fmt.Errorf("%w: %d bytes", chunkstore.ErrTooLarge, len(data))
	}
	if err := ctx.Err(); err != nil {
		return chunkstore.Ref{}, err
	}
	ref := chunkstore.Sum(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.chunks[ref]; !ok {
		s.chunks[ref] = bytes.Clone(data)
		if s.chunks[ref] == nil {
			s.chunks[ref] = []byte{}
		}
		s.bytes += int64(len(data))
	}
	return ref, nil
}

// Fetch returns a copy of the chunk.
func (s *Store) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	d, ok := s.chunks[ref]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", chunkstore.ErrNotFound, ref)
	}
	return bytes.Clone(d), nil
}

// Stat reports the chunk's size.
func (s *Store) Stat(ctx context.Context, ref chunkstore.Ref) (chunkstore.Info, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.Info{}, err
	}
	s.mu.RLock()
	d, ok := s.chunks[ref]
	s.mu.RUnlock()
	if !ok {
		return chunkstore.Info{}, fmt.Errorf("%w: %s", chunkstore.ErrNotFound, ref)
	}
	return chunkstore.Info{Ref: ref, Size: int64(len(d))}, nil
}

// Enumerate lists chunks after after in ascending Ref order. It works on a
// snapshot of the Refs taken at the start; chunks removed meanwhile are
// skipped.
func (s *Store) Enumerate(ctx context.Context, after chunkstore.Ref, fn func(chunkstore.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	refs := make([]chunkstore.Ref, 0, len(s.chunks))
	for r := range s.chunks {
		if bytes.Compare(r[:], after[:]) > 0 {
			refs = append(refs, r)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(refs, func(a, b chunkstore.Ref) int { return bytes.Compare(a[:], b[:]) })
	for _, r := range refs {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.RLock()
		d, ok := s.chunks[r]
		s.mu.RUnlock()
		if !ok {
			continue
		}
		if err := fn(chunkstore.Info{Ref: r, Size: int64(len(d))}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes chunks; missing ones are ignored.
func (s *Store) Remove(ctx context.Context, refs ...chunkstore.Ref) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range refs {
		if d, ok := s.chunks[r]; ok {
			s.bytes -= int64(len(d))
			delete(s.chunks, r)
		}
	}
	return nil
}

// Len returns the number of chunks and their total size.
func (s *Store) Len() (chunks int, bytes int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.chunks), s.bytes
}
