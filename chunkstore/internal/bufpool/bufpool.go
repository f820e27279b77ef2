// Package bufpool recycles the large byte buffers of the data path (parity
// shards, frames, shard records) in size classes, so that moving a gigabyte
// does not allocate, and zero, a gigabyte.
//
// Get returns a buffer of the asked length whose contents are garbage; Put
// gives it back once nothing refers to it. Classes are quarter steps between
// powers of two (4, 5, 6, 7, 8, 10, 12, 14, 16 KiB ...), so a buffer is at
// most 25% larger than asked. Buffers smaller than MinSize or larger than
// MaxSize are not pooled (Get allocates, Put drops).
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 12 // 4 KiB
	maxShift = 23 // 8 MiB
	// MinSize is the smallest pooled capacity.
	MinSize = 1 << minShift
	// MaxSize is the largest pooled capacity.
	MaxSize = 1 << maxShift
)

var pools [(maxShift-minShift)*4 + 1]sync.Pool

// classSize is the capacity of class c.
func classSize(c int) int {
	e, q := c/4+minShift, c%4
	return (1 << e) + q*(1<<(e-2))
}

// class returns the smallest class whose size is at least n
// (MinSize <= n <= MaxSize).
func class(n int) int {
	if n <= MinSize {
		return 0
	}
	e := bits.Len(uint(n-1)) - 1 // 2^e < n <= 2^(e+1)
	q := (n - 1 - (1 << e)) >> (e - 2)
	return (e-minShift)*4 + q + 1
}

// exact returns the class of capacity c, or -1 if c is not a class size.
func exact(c int) int {
	if c < MinSize || c > MaxSize {
		return -1
	}
	k := class(c)
	if classSize(k) != c {
		return -1
	}
	return k
}

// Get returns a buffer of length n (capacity a class size when pooled). Its
// contents are not zeroed.
func Get(n int) []byte {
	if n < MinSize/2 || n > MaxSize {
		return make([]byte, n)
	}
	c := class(n)
	if p, _ := pools[c].Get().(*[]byte); p != nil {
		return (*p)[:n]
	}
	return make([]byte, n, classSize(c))
}

// Put returns b to the pool. b must not be used afterwards, by anyone.
func Put(b []byte) {
	c := exact(cap(b))
	if c < 0 {
		return
	}
	b = b[:0]
	pools[c].Put(&b)
}
