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
// The lock is the inode's own (an open that verifies a large cache file
// holds up no other inode), made on first use and dropped when unused.
type serialOpens struct {
	gofuse.RawFileSystem
	mu    sync.Mutex
	nodes map[uint64]*nodeLock
}

type nodeLock struct {
	sync.Mutex
	users int // holders and waiters
}

// lock takes node's lock and returns its unlock.
func (s *serialOpens) lock(node uint64) func() {
	s.mu.Lock()
	if s.nodes == nil {
		s.nodes = map[uint64]*nodeLock{}
	}
	l := s.nodes[node]
	if l == nil {
		l = &nodeLock{}
		s.nodes[node] = l
	}
	l.users++
	s.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.nodes, node)
		}
		s.mu.Unlock()
	}
}

func (s *serialOpens) Open(cancel <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	defer s.lock(in.NodeId)()
	return s.RawFileSystem.Open(cancel, in, out)
}

func (s *serialOpens) Release(cancel <-chan struct{}, in *gofuse.ReleaseIn) {
	defer s.lock(in.NodeId)()
	s.RawFileSystem.Release(cancel, in)
}
