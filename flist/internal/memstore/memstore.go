// Package memstore is an in-memory chunkstore.Store for the flist packages'
// tests and benchmarks, with counters and fault injection. Production code
// uses the real chunk store.
package memstore

import (
	"bytes"
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// Store is a map of chunks. The zero value is not usable; call New.
type Store struct {
	mu     sync.RWMutex
	chunks map[chunkstore.Ref][]byte

	Puts, NewPuts, Fetches atomic.Int64
	FetchBytes             atomic.Int64 // bytes returned by Fetch
	NewBytes               atomic.Int64 // bytes of distinct chunks stored
	// Down makes every call block until ctx is done (an unreachable store).
	Down atomic.Bool
	// Delay is added to every Fetch.
	Delay atomic.Int64 // nanoseconds
}

// New returns an empty store.
func New() *Store { return &Store{chunks: map[chunkstore.Ref][]byte{}} }

func (s *Store) wait(ctx context.Context) error {
	if d := time.Duration(s.Delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.Down.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return ctx.Err()
}

// Fetch implements chunkstore.Fetcher.
func (s *Store) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	s.Fetches.Add(1)
	s.mu.RLock()
	b, ok := s.chunks[ref]
	s.mu.RUnlock()
	if !ok {
		return nil, chunkstore.ErrNotFound
	}
	s.FetchBytes.Add(int64(len(b)))
	return bytes.Clone(b), nil
}

// Put implements chunkstore.Receiver.
func (s *Store) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	if err := s.wait(ctx); err != nil {
		return chunkstore.Ref{}, err
	}
	if len(data) > chunkstore.MaxChunkSize {
		return chunkstore.Ref{}, chunkstore.ErrTooLarge
	}
	ref := chunkstore.Sum(data)
	s.Puts.Add(1)
	s.mu.Lock()
	if _, ok := s.chunks[ref]; !ok {
		s.chunks[ref] = bytes.Clone(data)
		s.NewPuts.Add(1)
		s.NewBytes.Add(int64(len(data)))
	}
	s.mu.Unlock()
	return ref, nil
}

// Stat implements chunkstore.Statter.
func (s *Store) Stat(ctx context.Context, ref chunkstore.Ref) (chunkstore.Info, error) {
	if err := s.wait(ctx); err != nil {
		return chunkstore.Info{}, err
	}
	s.mu.RLock()
	b, ok := s.chunks[ref]
	s.mu.RUnlock()
	if !ok {
		return chunkstore.Info{}, chunkstore.ErrNotFound
	}
	return chunkstore.Info{Ref: ref, Size: int64(len(b))}, nil
}

// Enumerate implements chunkstore.Enumerator.
func (s *Store) Enumerate(ctx context.Context, after chunkstore.Ref, fn func(chunkstore.Info) error) error {
	s.mu.RLock()
	var infos []chunkstore.Info
	for r, b := range s.chunks {
		if bytes.Compare(r[:], after[:]) > 0 {
			infos = append(infos, chunkstore.Info{Ref: r, Size: int64(len(b))})
		}
	}
	s.mu.RUnlock()
	sort.Slice(infos, func(i, j int) bool { return bytes.Compare(infos[i].Ref[:], infos[j].Ref[:]) < 0 })
	for _, in := range infos {
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// Remove implements chunkstore.Remover.
func (s *Store) Remove(ctx context.Context, refs ...chunkstore.Ref) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range refs {
		delete(s.chunks, r)
	}
	return nil
}

// Len returns the number of chunks stored.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.chunks)
}

// Corrupt flips a byte of the stored chunk ref (for tests of verification).
func (s *Store) Corrupt(ref chunkstore.Ref) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.chunks[ref]
	if ok && len(b) > 0 {
		b[0] ^= 0xff
	}
	return ok
}
