package memstore

import (
	"context"
	"sync/atomic"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
)

// Store is a mem.Store that counts Puts and Fetches. The zero value is
// not usable; call New.
type Store struct {
	*mem.Store

	Puts, Fetches atomic.Int64
	FetchBytes    atomic.Int64 // bytes returned by Fetch
	// Down makes Put, Fetch and Stat block until their ctx is done (an
	// unreachable store).
	Down atomic.Bool
}

var _ chunkstore.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{Store: mem.New()} }

func (s *Store) wait(ctx context.Context) error {
	if s.Down.Load() {
		<-ctx.Done()
	}
	return ctx.Err()
}

// Fetch implements chunkstore.Fetcher.
func (s *Store) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	s.Fetches.Add(1)
	b, err := s.Store.Fetch(ctx, ref)
	s.FetchBytes.Add(int64(len(b)))
	return b, err
}

// Put implements chunkstore.Receiver.
func (s *Store) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	if err := s.wait(ctx); err != nil {
		return chunkstore.Ref{}, err
	}
	s.Puts.Add(1)
	return s.Store.Put(ctx, data)
}

// Stat implements chunkstore.Statter.
func (s *Store) Stat(ctx context.Context, ref chunkstore.Ref) (chunkstore.Info, error) {
	if err := s.wait(ctx); err != nil {
		return chunkstore.Info{}, err
	}
	return s.Store.Stat(ctx, ref)
}

// Len returns the number of chunks stored.
func (s *Store) Len() int {
	n, _ := s.Store.Len()
	return n
}
