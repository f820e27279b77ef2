package fuse

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
)

// source serves chunk bytes: from the shared disk cache, a small memory
// cache, or the store (one fetch per chunk at a time, verified, with a
// deadline), and prefetches ahead of sequential readers.
type source struct {
	store   chunkstore.Fetcher
	cache   *cache.Cache
	timeout time.Duration
	ctx     context.Context // cancelled at unmount
	m       *metrics

	mu       sync.Mutex
	inflight map[chunkstore.Ref]*call
	mem      *memLRU

	prefetch chan struct{} // bounds background prefetches
	wg       sync.WaitGroup
}

type call struct {
	done chan struct{}
	data []byte
	err  error
}

func newSource(ctx context.Context, store chunkstore.Fetcher, c *cache.Cache, timeout time.Duration, memBytes int64, prefetchers int, m *metrics) *source {
	return &source{
		store: store, cache: c, timeout: timeout, ctx: ctx, m: m,
		inflight: map[chunkstore.Ref]*call{},
		mem:      newMemLRU(memBytes),
		prefetch: make(chan struct{}, prefetchers),
	}
}

// wait waits for background prefetches to end (after ctx is cancelled).
func (s *source) wait() { s.wg.Wait() }

// cached reports whether a chunk can be read without the store.
func (s *source) cached(c flist.Chunk) bool {
	if s.mem.has(c.Ref) {
		return true
	}
	return s.cache != nil && s.cache.Has(cache.ChunkKey(c.Ref))
}

// readAt copies chunk c's bytes at off into p.
func (s *source) readAt(ctx context.Context, c flist.Chunk, p []byte, off int64) (int, error) {
	if off >= int64(c.Size) {
		return 0, nil
	}
	if len(p) > int(int64(c.Size)-off) {
		p = p[:int64(c.Size)-off]
	}
	if data := s.mem.get(c.Ref); data != nil {
		return copy(p, data[off:]), nil
	}
	if s.cache != nil {
		n, err := s.cache.ReadAt(cache.ChunkKey(c.Ref), p, off)
		if err == nil && n == len(p) {
			return n, nil
		}
	}
	data, err := s.get(ctx, c)
	if err != nil {
		return 0, err
	}
	return copy(p, data[off:]), nil
}

// get returns a chunk's whole content from memory or the store.
func (s *source) get(ctx context.Context, c flist.Chunk) ([]byte, error) {
	if data := s.mem.get(c.Ref); data != nil {
		return data, nil
	}
	s.mu.Lock()
	cl, ok := s.inflight[c.Ref]
	if !ok {
		cl = &call{done: make(chan struct{})}
		s.inflight[c.Ref] = cl
		s.wg.Add(1)
		go s.fetch(c, cl)
	}
	s.mu.Unlock()
	select {
	case <-cl.done:
		return cl.data, cl.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fetch runs one fetch with its own deadline (not the first reader's
// context, so an interrupted reader does not fail the others), retrying
// transient errors until the deadline.
func (s *source) fetch(c flist.Chunk, cl *call) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	start := time.Now()
	backoff := 50 * time.Millisecond
	for {
		cl.data, cl.err = flist.FetchChunk(ctx, s.store, c)
		if cl.err == nil || errors.Is(cl.err, chunkstore.ErrNotFound) || errors.Is(cl.err, chunkstore.ErrCorrupt) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	if cl.err != nil && ctx.Err() != nil && s.ctx.Err() == nil {
		cl.err = fmt.Errorf("chunk %s: store unreachable for %v: %w", c.Ref.Short(), s.timeout, cl.err)
	}
	if cl.err == nil {
		s.m.fetches.Inc()
		s.m.fetchBytes.Add(float64(len(cl.data)))
		s.m.fetchSeconds.Observe(time.Since(start).Seconds())
		s.mem.put(c.Ref, cl.data)
		if s.cache != nil {
			_ = s.cache.Put(cache.ChunkKey(c.Ref), cl.data)
		}
	} else {
		s.m.fetchErrors.Inc()
	}
	s.mu.Lock()
	delete(s.inflight, c.Ref)
	s.mu.Unlock()
	close(cl.done)
}

// prefetchChunks starts background fetches of chunks not yet local, as many
// as the prefetch budget allows right now.
func (s *source) prefetchChunks(chunks []flist.Chunk) {
	for _, c := range chunks {
		if s.cached(c) {
			continue
		}
		s.mu.Lock()
		_, busy := s.inflight[c.Ref]
		s.mu.Unlock()
		if busy {
			continue
		}
		select {
		case s.prefetch <- struct{}{}:
		default:
			return
		}
		s.wg.Add(1)
		go func(c flist.Chunk) {
			defer s.wg.Done()
			defer func() { <-s.prefetch }()
			s.m.prefetches.Inc()
			_, _ = s.get(s.ctx, c)
		}(c)
	}
}

// memLRU keeps recently used chunks in memory, bounded in bytes.
type memLRU struct {
	mu    sync.Mutex
	max   int64
	size  int64
	items map[chunkstore.Ref]*list.Element
	order *list.List
}

type memItem struct {
	ref  chunkstore.Ref
	data []byte
}

func newMemLRU(max int64) *memLRU {
	return &memLRU{max: max, items: map[chunkstore.Ref]*list.Element{}, order: list.New()}
}

func (m *memLRU) has(ref chunkstore.Ref) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.items[ref]
	return ok
}

func (m *memLRU) get(ref chunkstore.Ref) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.items[ref]; ok {
		m.order.MoveToFront(e)
		return e.Value.(*memItem).data
	}
	return nil
}

func (m *memLRU) put(ref chunkstore.Ref, data []byte) {
	if int64(len(data)) > m.max {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.items[ref]; ok {
		return
	}
	m.items[ref] = m.order.PushFront(&memItem{ref: ref, data: data})
	m.size += int64(len(data))
	for m.size > m.max {
		back := m.order.Back()
		it := back.Value.(*memItem)
		m.order.Remove(back)
		delete(m.items, it.ref)
		m.size -= int64(len(it.data))
	}
}
