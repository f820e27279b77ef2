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
	"errors"
	"fmt"
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

// Contains reports whether ref is cached, without counting a hit or
// refreshing the entry (readahead asks it to skip what is cached).
func (c *Cache) Contains(ref chunkstore.Ref) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[ref]
	return ok
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

// GetMany returns the values of refs, vals[i] for refs[i], calling fetch
// once with every Ref that is neither cached nor being fetched by another
// Get or GetMany (each distinct Ref once; nothing when all are cached).
// Refs another caller is fetching are waited for, and fetched again by
// this caller (once) if that fetch failed, so one caller's failure or
// cancellation does not become another's. fetch follows
// chunkstore.ManyFetcher's contract; its successful values are cached.
// Refs that could not be fetched are named in a *chunkstore.BatchError
// (the other values are set); a ctx that ends is its error, with no
// values.
func (c *Cache) GetMany(ctx context.Context, refs []chunkstore.Ref, fetch func(context.Context, []chunkstore.Ref) ([][]byte, error)) ([][]byte, error) {
	if c == nil {
		return fetch(ctx, refs)
	}
	vals := make([][]byte, len(refs))
	errs := make([]error, len(refs))
	if err := c.getMany(ctx, refs, vals, errs, fetch, true); err != nil {
		return nil, err
	}
	be := chunkstore.BatchError{Fetch: true}
	for i, err := range errs {
		if err != nil {
			vals[i] = nil
			be.Failed = append(be.Failed, i)
			be.Errs = append(be.Errs, err)
		}
	}
	if len(be.Failed) > 0 {
		return vals, &be
	}
	return vals, nil
}

// getMany fills vals and errs for refs; retry refetches what another
// caller failed to fetch.
func (c *Cache) getMany(ctx context.Context, refs []chunkstore.Ref, vals [][]byte, errs []error, fetch func(context.Context, []chunkstore.Ref) ([][]byte, error), retry bool) error {
	type waiter struct {
		i  int
		cl *call
	}
	var (
		first = make(map[chunkstore.Ref]int, len(refs))
		mine  []chunkstore.Ref
		calls []*call
		at    []int // index in refs of mine[j]
		waits []waiter
		hits  int
	)
	c.mu.Lock()
	for i, ref := range refs {
		if _, ok := first[ref]; ok {
			continue
		}
		first[ref] = i
		if el, ok := c.items[ref]; ok {
			c.ll.MoveToFront(el)
			vals[i] = el.Value.(*entry).data
			hits++
			continue
		}
		if cl, ok := c.inflight[ref]; ok {
			waits = append(waits, waiter{i, cl})
			continue
		}
		cl := &call{done: make(chan struct{})}
		c.inflight[ref] = cl
		mine, calls, at = append(mine, ref), append(calls, cl), append(at, i)
	}
	c.mu.Unlock()
	if c.OnHit != nil {
		for range hits {
			c.OnHit()
		}
	}
	if len(mine) > 0 {
		if c.OnMiss != nil {
			for range mine {
				c.OnMiss()
			}
		}
		data, err := fetch(ctx, mine)
		var be *chunkstore.BatchError
		if err != nil && !errors.As(err, &be) || len(data) != len(mine) {
			if err == nil || be != nil {
				err = fmt.Errorf("refcache: %d values fetched for %d refs", len(data), len(mine))
			}
			be, data = nil, nil
		}
		c.mu.Lock()
		for j, ref := range mine {
			cl := calls[j]
			delete(c.inflight, ref)
			switch {
			case data == nil:
				cl.err = err
			case be != nil && be.Err(j) != nil:
				cl.err = be.Err(j)
			default:
				cl.data = data[j]
				c.addLocked(ref, cl.data)
			}
			vals[at[j]], errs[at[j]] = cl.data, cl.err
		}
		c.mu.Unlock()
		for _, cl := range calls {
			close(cl.done)
		}
	}
	var again []chunkstore.Ref
	var againAt []int
	for _, w := range waits {
		select {
		case <-w.cl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if w.cl.err != nil && retry {
			again, againAt = append(again, refs[w.i]), append(againAt, w.i)
			continue
		}
		if w.cl.err == nil && c.OnHit != nil {
			c.OnHit()
		}
		vals[w.i], errs[w.i] = w.cl.data, w.cl.err
	}
	if len(again) > 0 {
		v, e := make([][]byte, len(again)), make([]error, len(again))
		if err := c.getMany(ctx, again, v, e, fetch, false); err != nil {
			return err
		}
		for j, i := range againAt {
			vals[i], errs[i] = v[j], e[j]
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, ref := range refs {
		if f := first[ref]; f != i {
			vals[i], errs[i] = vals[f], errs[f]
		}
	}
	return nil
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
