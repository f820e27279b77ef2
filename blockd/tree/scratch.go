package tree

import (
	"sync"

	"github.com/zosproject/zos/chunkstore"
)

// Scratch slot arrays. An update expands every node on the paths it
// changes into a dense array of fanout slots (17 KiB of entries for a
// leaf of 256, 8 KiB of refs for an interior node), encodes the result
// and drops the array: at a commit per 16 random writes that is most of
// what a commit allocates, and fresh heap the kernel faults in and zeroes
// page by page. The arrays are recycled instead.
var entryScratch, refScratch sync.Pool

// scratchEntries returns a zeroed array of n entries (putScratch it).
func scratchEntries(n int) *[]Entry {
	if p, _ := entryScratch.Get().(*[]Entry); p != nil && cap(*p) >= n {
		*p = (*p)[:n]
		clear(*p)
		return p
	}
	s := make([]Entry, n)
	return &s
}

// scratchRefs returns a zeroed array of n refs (putScratch it).
func scratchRefs(n int) *[]chunkstore.Ref {
	if p, _ := refScratch.Get().(*[]chunkstore.Ref); p != nil && cap(*p) >= n {
		*p = (*p)[:n]
		clear(*p)
		return p
	}
	s := make([]chunkstore.Ref, n)
	return &s
}

// putScratch recycles an array; nothing may use it afterwards.
func putScratch[T any](pool *sync.Pool, p *[]T) { pool.Put(p) }
