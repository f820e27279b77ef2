package blockd

import (
	"sync"
	"sync/atomic"
)

// budget is the node-wide account of write-back cache memory (dirty and
// in-flight block data of every open vdisk), bounded by
// Config.NodeDirtyBytes. Writers of any vdisk wait on it when it is full;
// every release wakes them.
type budget struct {
	used    atomic.Int64
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{} // closed (and replaced) when memory is released
}

func newBudget() *budget { return &budget{ch: make(chan struct{})} }

// add accounts delta bytes; a release wakes the waiters.
func (b *budget) add(delta int64) {
	b.used.Add(delta)
	if delta < 0 && b.waiters.Load() > 0 {
		b.mu.Lock()
		close(b.ch)
		b.ch = make(chan struct{})
		b.mu.Unlock()
	}
}

// wait registers a waiter and returns the channel closed at the next
// release; call done when no longer waiting. Check the condition after
// wait returns, so no release in between is missed.
func (b *budget) wait() (<-chan struct{}, func()) {
	b.waiters.Add(1)
	b.mu.Lock()
	ch := b.ch
	b.mu.Unlock()
	return ch, func() { b.waiters.Add(-1) }
}
