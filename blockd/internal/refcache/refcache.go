// Package refcache is a bounded, concurrency-safe LRU cache of immutable
// chunks keyed by their Ref, with request coalescing: concurrent Gets of one
// missing Ref run a single fetch. Both the vdisk tree-node cache and the
// clean-block cache of blockd are refcaches. Because a Ref names immutable
// content, entries never go stale and one cache may serve many vdisks (clones
// share the blocks of their origin).
package refcache

import (
	"container/list"
	"context"
	"sync"

	"github.com/zosproject/zos/chunkstore"
)

// entryOverhead approximates the bookkeeping bytes of one entry (list
// element, map slot, Ref), so a cache of tiny values stays bounded too.
const entryOverhead = 96

// Cache is an LRU of Ref -> []byte bounded by total bytes. Values are shared
// and must not be modified by anyone once handed to the cache. The zero
// value is not usable; call New. A nil *Cache is a valid cache that holds
// nothing.
type Cache struct {
	mu       sync.Mutex
	max      int64
	size     int64
	ll       *list.List // front = most recently used
	items    map[chunkstore.Ref]*list.Element
	inflight map[chunkstore.Ref]*call

	// OnHit and OnMiss, if set before use, are called (without locks held)
	// for every Get (or Peek hit) that found the value, and every Get
	// that had to fetch it.
	OnHit, OnMiss func()
}

type entry struct {
	ref  chunkstore.Ref
	data []byte
}

type call struct {
	done chan struct{}
	data []byte
	err  error
}

// New returns a cache holding at most maxBytes of values (plus a small
// per-entry overhead). maxBytes <= 0 makes a cache that keeps nothing but
// still coalesces concurrent fetches.
func New(maxBytes int64) *Cache {
	return &Cache{max: maxBytes, ll: list.New(), items: map[chunkstore.Ref]*list.Element{}, inflight: map[chunkstore.Ref]*call{}}
}

func cost(b []byte) int64 { return int64(cap(b)) + entryOverhead }

// Peek returns the cached value without fetching. A value found counts as
// a hit (OnHit); a value not found is no miss, as nothing is fetched.
func (c *Cache) Peek(ref chunkstore.Ref) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	el, ok := c.items[ref]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	c.ll.MoveToFront(el)
	d := el.Value.(*entry).data
	c.mu.Unlock()
	if c.OnHit != nil {
		c.OnHit()
	}
	return d, true
}

// Add inserts (or refreshes) a value. data must not be modified afterwards.
func (c *Cache) Add(ref chunkstore.Ref, data []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.addLocked(ref, data)
	c.mu.Unlock()
}

func (c *Cache) addLocked(ref chunkstore.Ref, data []byte) {
	if cost(data) > c.max {
		return
	}
	if el, ok := c.items[ref]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[ref] = c.ll.PushFront(&entry{ref: ref, data: data})
	c.size += cost(data)
	for c.size > c.max {
		el := c.ll.Back()
		e := el.Value.(*entry)
		c.ll.Remove(el)
		delete(c.items, e.ref)
		c.size -= cost(e.data)
	}
}

// Get returns the value of ref, calling fetch once (for all concurrent
// callers) when it is not cached. The result of a successful fetch is
// cached. A caller whose ctx ends stops waiting; the fetch itself runs
// with the ctx of the caller that started it.
func (c *Cache) Get(ctx context.Context, ref chunkstore.Ref, fetch func(context.Context, chunkstore.Ref) ([]byte, error)) ([]byte, error) {
	if c == nil {
		return fetch(ctx, ref)
	}
	c.mu.Lock()
	if el, ok := c.items[ref]; ok {
		c.ll.MoveToFront(el)
		d := el.Value.(*entry).data
		c.mu.Unlock()
		if c.OnHit != nil {
			c.OnHit()
		}
		return d, nil
	}
	if cl, ok := c.inflight[ref]; ok {
		c.mu.Unlock()
		select {
		case <-cl.done:
			if cl.err == nil && c.OnHit != nil {
				c.OnHit()
			}
			return cl.data, cl.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[ref] = cl
	c.mu.Unlock()
	if c.OnMiss != nil {
		c.OnMiss()
	}

	cl.data, cl.err = fetch(ctx, ref)

	c.mu.Lock()
	delete(c.inflight, ref)
	if cl.err == nil {
		c.addLocked(ref, cl.data)
	}
	c.mu.Unlock()
	close(cl.done)
	return cl.data, cl.err
}

// Len returns the number of cached entries.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// Bytes returns the accounted size of the cached entries.
func (c *Cache) Bytes() int64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
