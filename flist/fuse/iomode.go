package fuse

import (
	"sync"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// serialOpens runs the OPEN and RELEASE requests of one inode one at a
// time.
//
// go-fuse (v2.12.1) counts the opens that use an inode's passthrough
// backing file, but its Release drops a reference whether or not the
// handle took one. A daemon-served (cached) handle whose release runs
// between our Release and go-fuse's bookkeeping, while the same inode is
// opened again in passthrough mode (its first read filled the cache),
// therefore unregisters the new open's backing file: the kernel may find
// the id gone (EIO on that open), and the next open registers a second
// backing file, which the kernel refuses for an inode that has one (EIO).
// Serialised, a release either finishes before the next open (no backing
// file yet, nothing dropped) or the open runs first and, seeing the
// cached handle still open, follows its mode (no backing file taken).
//
// Locks are striped by node id: opens are not a hot path, and an open
// waits at most for one other inode's open (a cache lookup).
type serialOpens struct {
	gofuse.RawFileSystem
	locks [64]sync.Mutex
}

func (s *serialOpens) lock(node uint64) *sync.Mutex { return &s.locks[node%uint64(len(s.locks))] }

func (s *serialOpens) Open(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	mu := s.lock(in.NodeId)
	mu.Lock()
	defer mu.Unlock()
	return s.RawFileSystem.Open(cancel, in, out)
}

func (s *serialOpens) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	mu := s.lock(in.NodeId)
	mu.Lock()
	defer mu.Unlock()
	s.RawFileSystem.Release(cancel, in)
}
