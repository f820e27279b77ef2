package nbd

import (
	"math/bits"
	"sync"
)

// Request buffers come from size-classed pools (powers of two from 4 KiB)
// so the request path does not allocate in steady state.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 31
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// bufCap is the capacity of buffers of the class that holds n bytes.
func bufCap(n int) int { return 1 << (bufClass(n) + minBufShift) }

// getBuf returns a buffer of length n; give it back with putBuf.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if p, _ := bufPools[c].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minBufShift))
	return &b
}

func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	c := bufClass(cap(*p))
	if cap(*p) != 1<<(c+minBufShift) {
		return // not one of ours
	}
	*p = (*p)[:0]
	bufPools[c].Put(p)
}
