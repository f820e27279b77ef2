package resp

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Keyspace errors.
var (
	// ErrFull: a push would take a list or the keyspace past its bound.
	ErrFull = errors.New("resp: keyspace full")
	// ErrClosed: the keyspace was closed.
	ErrClosed = errors.New("resp: keyspace closed")
)

// KeyspaceConfig bounds a Keyspace.
type KeyspaceConfig struct {
	// MaxListBytes bounds the payload bytes of one list (default 64 MiB).
	MaxListBytes int
	// MaxBytes bounds the bytes of all lists (default 512 MiB). When a
	// push would pass it, keys with a TTL are evicted soonest-expiring
	// first; only when none is left is the push refused.
	MaxBytes int
	// SweepInterval between removals of expired keys (default 100ms).
	SweepInterval time.Duration
}

// Keyspace holds the lists of the node agent in memory: 0-core's
// core:default, result:<id>, result:<id>:flag and stream:<id>. Lists are
// bounded (per list and in total), keys can expire, and blocking pops
// (BLPOP, BRPOPLPUSH) are woken in arrival order by pushes. It is safe for
// concurrent use by connections and by the agent in the same process.
type Keyspace struct {
	cfg KeyspaceConfig

	mu       sync.Mutex
	lists    map[string]*list
	waiters  map[string][]*waiter
	total    int
	expiries expiryHeap // lists with an expiry, soonest first
	evicted  int64
	closed   bool
	stop     chan struct{}
	done     chan struct{}
}

type list struct {
	items  [][]byte // items[head:] are the elements
	head   int
	bytes  int       // payload bytes
	expiry time.Time // zero: none
	key    string
	hidx   int // index in Keyspace.expiries, -1 when none
}

// keyOverhead is what a key costs beyond its payload, counted in the
// bounds so that many small lists cannot grow memory without limit.
const keyOverhead = 128

func (l *list) len() int { return len(l.items) - l.head }

type waiter struct {
	keys []string
	dest string // BRPOPLPUSH destination; "" for BLPOP
	ch   chan popped
	done bool // delivered or cancelled (under Keyspace.mu)
}

type popped struct {
	key string
	val []byte
}

// NewKeyspace returns an empty keyspace with a background sweeper of
// expired keys; Close stops it.
func NewKeyspace(cfg KeyspaceConfig) *Keyspace {
	if cfg.MaxListBytes <= 0 {
		cfg.MaxListBytes = 64 << 20
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 512 << 20
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 100 * time.Millisecond
	}
	k := &Keyspace{cfg: cfg, lists: map[string]*list{}, waiters: map[string][]*waiter{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go k.sweep()
	return k
}

// Close stops the sweeper and wakes every blocked pop with ErrClosed.
func (k *Keyspace) Close() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		<-k.done
		return
	}
	k.closed = true
	for _, ws := range k.waiters {
		for _, w := range ws {
			if !w.done {
				w.done = true
				close(w.ch)
			}
		}
	}
	k.waiters = map[string][]*waiter{}
	k.mu.Unlock()
	close(k.stop)
	<-k.done
}

func (k *Keyspace) sweep() {
	defer close(k.done)
	t := time.NewTicker(k.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case now := <-t.C:
			k.mu.Lock()
			// Only keys that are due: the heap keeps the sweep O(expired).
			for n := 0; len(k.expiries) > 0 && !now.Before(k.expiries[0].expiry) && n < 100000; n++ {
				l := k.expiries[0]
				k.dropLocked(l.key, l)
			}
			k.mu.Unlock()
		}
	}
}

// expiryHeap orders lists by expiry; each list knows its index.
type expiryHeap []*list

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *expiryHeap) Push(x any) {
	l := x.(*list)
	l.hidx = len(*h)
	*h = append(*h, l)
}
func (h *expiryHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.hidx = -1
	return l
}

func (k *Keyspace) newListLocked(key string) *list {
	l := &list{key: key, hidx: -1}
	k.lists[key] = l
	k.total += keyOverhead + len(key)
	return l
}

func (k *Keyspace) setExpiryLocked(l *list, at time.Time) {
	l.expiry = at
	switch {
	case at.IsZero() && l.hidx >= 0:
		heap.Remove(&k.expiries, l.hidx)
	case at.IsZero():
	case l.hidx >= 0:
		heap.Fix(&k.expiries, l.hidx)
	default:
		heap.Push(&k.expiries, l)
	}
}

func (k *Keyspace) dropLocked(key string, l *list) {
	k.total -= l.bytes + keyOverhead + len(key)
	if l.hidx >= 0 {
		heap.Remove(&k.expiries, l.hidx)
	}
	delete(k.lists, key)
}

// getLocked returns the live list at key (nil if absent or expired).
func (k *Keyspace) getLocked(key string) *list {
	l := k.lists[key]
	if l != nil && !l.expiry.IsZero() && !time.Now().Before(l.expiry) {
		k.dropLocked(key, l)
		return nil
	}
	return l
}

func size(vals [][]byte) int {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	return n
}

// RPush appends vals to the list at key and returns its new length.
func (k *Keyspace) RPush(key string, vals ...[]byte) (int, error) {
	return k.push(key, vals, false, false)
}

// LPush prepends vals (each to the head, in order, as Redis does).
func (k *Keyspace) LPush(key string, vals ...[]byte) (int, error) {
	return k.push(key, vals, true, false)
}

// pushOwned is push for values the keyspace may keep without a copy (the
// RESP reader allocates every argument afresh).
func (k *Keyspace) pushOwned(key string, vals [][]byte, left bool) (int, error) {
	return k.push(key, vals, left, true)
}

func (k *Keyspace) push(key string, vals [][]byte, left, owned bool) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return 0, ErrClosed
	}
	l := k.getLocked(key)
	n := size(vals)
	cur := 0
	if l != nil {
		cur = l.bytes
	}
	if cur+n > k.cfg.MaxListBytes {
		return 0, fmt.Errorf("%w: list %q would hold %d bytes (limit %d)", ErrFull, printable([]byte(key)), cur+n, k.cfg.MaxListBytes)
	}
	if l == nil {
		n += keyOverhead + len(key)
	}
	// Full: evict keys that are expiring anyway (finished jobs' results),
	// soonest first, as Redis's volatile-ttl policy; keys without a TTL
	// (queues, running jobs) are never evicted.
	for k.total+n > k.cfg.MaxBytes && len(k.expiries) > 0 && k.expiries[0] != l {
		v := k.expiries[0]
		k.dropLocked(v.key, v)
		k.evicted++
	}
	if k.total+n > k.cfg.MaxBytes {
		return 0, fmt.Errorf("%w: the agent holds %d bytes of lists (limit %d); read or delete results and streams", ErrFull, k.total, k.cfg.MaxBytes)
	}
	if l == nil {
		l = k.newListLocked(key)
	}
	n = size(vals)
	for _, v := range vals {
		if !owned {
			v = append([]byte(nil), v...)
		}
		if left {
			k.prependLocked(l, v)
		} else {
			l.items = append(l.items, v)
		}
	}
	l.bytes += n
	k.total += n
	length := l.len()
	k.serveLocked(key)
	return length, nil
}

func (k *Keyspace) prependLocked(l *list, v []byte) {
	if l.head > 0 {
		l.head--
		l.items[l.head] = v
		return
	}
	// Grow at the front with room for more prepends.
	room := max(4, l.len())
	items := make([][]byte, room+l.len(), room+l.len()+1)
	copy(items[room:], l.items[l.head:])
	l.items, l.head = items, room-1
	l.items[l.head] = v
}

// popLocked removes and returns the head (left) or tail of a non-empty list.
func (k *Keyspace) popLocked(key string, l *list, left bool) []byte {
	var v []byte
	if left {
		v = l.items[l.head]
		l.items[l.head] = nil
		l.head++
	} else {
		v = l.items[len(l.items)-1]
		l.items[len(l.items)-1] = nil
		l.items = l.items[:len(l.items)-1]
	}
	l.bytes -= len(v)
	k.total -= len(v)
	if l.len() == 0 {
		k.dropLocked(key, l) // an empty list does not exist, as in Redis
	} else if l.head > 64 && l.head > l.len() {
		l.items = append([][]byte(nil), l.items[l.head:]...)
		l.head = 0
	}
	return v
}

// serveLocked hands elements of key to blocked pops, oldest waiter first.
func (k *Keyspace) serveLocked(key string) {
	for {
		ws := k.waiters[key]
		if len(ws) == 0 {
			return
		}
		l := k.getLocked(key)
		if l == nil {
			return
		}
		w := ws[0]
		k.removeWaiterLocked(w)
		w.done = true
		if w.dest == "" {
			w.ch <- popped{key: key, val: k.popLocked(key, l, true)}
			continue
		}
		v := k.popLocked(key, l, false)
		k.pushLeftNoLimitLocked(w.dest, v)
		w.ch <- popped{key: key, val: v}
		if w.dest != key {
			k.serveLocked(w.dest)
		}
	}
}

// pushLeftNoLimitLocked moves an element already accounted for.
func (k *Keyspace) pushLeftNoLimitLocked(key string, v []byte) {
	l := k.getLocked(key)
	if l == nil {
		l = k.newListLocked(key)
	}
	k.prependLocked(l, v)
	l.bytes += len(v)
	k.total += len(v)
}

func (k *Keyspace) removeWaiterLocked(w *waiter) {
	for _, key := range w.keys {
		ws := k.waiters[key]
		for i, x := range ws {
			if x == w {
				ws = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(k.waiters, key)
		} else {
			k.waiters[key] = ws
		}
	}
}

// BLPop pops the head of the first non-empty list of keys, waiting up to
// timeout (0: forever) or until ctx ends. It returns ok=false on timeout.
func (k *Keyspace) BLPop(ctx context.Context, timeout time.Duration, keys ...string) (key string, val []byte, ok bool, err error) {
	return k.block(ctx, timeout, keys, "")
}

// BRPopLPush pops the tail of src and pushes it to the head of dst,
// waiting as BLPop. With src == dst the list rotates, so every reader of a
// one-element list sees the element.
func (k *Keyspace) BRPopLPush(ctx context.Context, timeout time.Duration, src, dst string) (val []byte, ok bool, err error) {
	_, val, ok, err = k.block(ctx, timeout, []string{src}, dst)
	return val, ok, err
}

func (k *Keyspace) block(ctx context.Context, timeout time.Duration, keys []string, dest string) (string, []byte, bool, error) {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return "", nil, false, ErrClosed
	}
	for _, key := range keys {
		if l := k.getLocked(key); l != nil {
			if dest == "" {
				v := k.popLocked(key, l, true)
				k.mu.Unlock()
				return key, v, true, nil
			}
			v := k.popLocked(key, l, false)
			k.pushLeftNoLimitLocked(dest, v)
			if dest != key {
				k.serveLocked(dest)
			}
			k.mu.Unlock()
			return key, v, true, nil
		}
	}
	w := &waiter{keys: keys, dest: dest, ch: make(chan popped, 1)}
	for _, key := range keys {
		k.waiters[key] = append(k.waiters[key], w)
	}
	k.mu.Unlock()

	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	select {
	case p, ok := <-w.ch:
		if !ok {
			return "", nil, false, ErrClosed
		}
		return p.key, p.val, true, nil
	case <-timer:
	case <-ctx.Done():
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if w.done { // delivered while we were giving up
		p, ok := <-w.ch
		if !ok {
			return "", nil, false, ErrClosed
		}
		if ctx.Err() != nil {
			// Nobody will read it: give it back where it came from.
			if dest == "" {
				k.pushLeftNoLimitLocked(p.key, p.val)
				k.serveLocked(p.key)
			}
			return "", nil, false, ctx.Err()
		}
		return p.key, p.val, true, nil
	}
	w.done = true
	k.removeWaiterLocked(w)
	return "", nil, false, ctx.Err()
}

// LRange returns elements start..stop (inclusive, negative from the end).
func (k *Keyspace) LRange(key string, start, stop int) [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.getLocked(key)
	if l == nil {
		return nil
	}
	n := l.len()
	if start < 0 {
		start = max(n+start, 0)
	}
	if stop < 0 {
		stop = n + stop
	}
	stop = min(stop, n-1)
	if start > stop {
		return nil
	}
	out := make([][]byte, 0, stop-start+1)
	for i := start; i <= stop; i++ {
		out = append(out, l.items[l.head+i])
	}
	return out
}

// LLen returns the length of the list at key (0 if absent).
func (k *Keyspace) LLen(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l := k.getLocked(key); l != nil {
		return l.len()
	}
	return 0
}

// LPop removes and returns the head of the list at key.
func (k *Keyspace) LPop(key string) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.getLocked(key)
	if l == nil {
		return nil, false
	}
	return k.popLocked(key, l, true), true
}

// Exists reports whether key holds a list.
func (k *Keyspace) Exists(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.getLocked(key) != nil
}

// Del removes key; it reports whether it existed.
func (k *Keyspace) Del(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.getLocked(key)
	if l == nil {
		return false
	}
	k.dropLocked(key, l)
	return true
}

// Expire sets key to expire after d (d <= 0 deletes it); it reports
// whether the key exists.
func (k *Keyspace) Expire(key string, d time.Duration) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.getLocked(key)
	if l == nil {
		return false
	}
	if d <= 0 {
		k.dropLocked(key, l)
		return true
	}
	k.setExpiryLocked(l, time.Now().Add(d))
	return true
}

// Persist removes the expiry of key.
func (k *Keyspace) Persist(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.getLocked(key)
	if l == nil || l.expiry.IsZero() {
		return false
	}
	k.setExpiryLocked(l, time.Time{})
	return true
}

// TTL returns the time left before key expires: -1 without expiry, -2 when
// the key does not exist (Redis's convention, in whole seconds).
func (k *Keyspace) TTL(key string) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.getLocked(key)
	switch {
	case l == nil:
		return -2
	case l.expiry.IsZero():
		return -1
	}
	return int64((time.Until(l.expiry) + time.Second - 1) / time.Second)
}

// Bytes returns the payload bytes held.
func (k *Keyspace) Bytes() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.total
}

// Keys returns the number of keys.
func (k *Keyspace) Keys() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.lists)
}

// Evicted returns how many expiring keys were dropped early to make room.
func (k *Keyspace) Evicted() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.evicted
}
