package fuse

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"github.com/zeebo/blake3"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
)

// mountFS is the state shared by the nodes of one mount.
type mountFS struct {
	r           *flist.Reader
	src         *source
	cache       *cache.Cache
	passthrough atomic.Bool
	readahead   int
	log         *slog.Logger
	m           *metrics
	ctx         context.Context

	mu         sync.Mutex
	assembling map[cache.Key]bool
	wg         sync.WaitGroup
}

// node is one inode of the mounted flist.
type node struct {
	fs.Inode
	mfs *mountFS
	in  flist.Inode

	mu        sync.Mutex
	chunks    []flist.Chunk
	loaded    bool
	openCache int      // open handles reading through the daemon
	openPT    int      // open passthrough handles
	ptFile    *os.File // backing file while openPT > 0
}

var (
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeReaddirer   = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeGetxattrer  = (*node)(nil)
	_ fs.NodeListxattrer = (*node)(nil)
	_ fs.NodeStatfser    = (*node)(nil)
)

// errno maps errors to FUSE errnos once: missing is ENOENT, everything the
// store or verification reports is EIO.
func errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flist.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, flist.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	return syscall.EIO
}

func fillAttr(out *gofuse.Attr, in *flist.Inode) {
	out.Ino = uint64(in.Ino)
	out.Mode = in.Mode
	out.Size = uint64(in.Size)
	out.Blocks = (uint64(in.Size) + 511) / 512
	out.Blksize = 4096
	out.Nlink = in.Nlink
	out.Owner = gofuse.Owner{Uid: in.UID, Gid: in.GID}
	out.Rdev = uint32(in.Rdev)
	out.Atime, out.Atimensec = uint64(in.Atime.Unix()), uint32(in.Atime.Nanosecond())
	out.Mtime, out.Mtimensec = uint64(in.Mtime.Unix()), uint32(in.Mtime.Nanosecond())
	out.Ctime, out.Ctimensec = uint64(in.Ctime.Unix()), uint32(in.Ctime.Nanosecond())
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, &n.in)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !n.in.IsDir() {
		return nil, syscall.ENOTDIR
	}
	d, err := n.mfs.r.Lookup(n.in.Ino, name)
	if err != nil {
		return nil, errno(err)
	}
	in, err := n.mfs.r.Inode(d.Ino)
	if err != nil {
		n.mfs.log.Error("lookup", "name", name, "err", err)
		return nil, errno(err)
	}
	fillAttr(&out.Attr, &in)
	child := &node{mfs: n.mfs, in: in}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: in.Type(), Ino: uint64(in.Ino)}), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.mfs.r.ReadDir(n.in.Ino)
	if err != nil {
		n.mfs.log.Error("readdir", "ino", n.in.Ino, "err", err)
		return nil, errno(err)
	}
	out := make([]gofuse.DirEntry, len(ents))
	for i, d := range ents {
		out[i] = gofuse.DirEntry{Name: d.Name, Mode: d.Type, Ino: uint64(d.Ino)}
	}
	return fs.NewListDirStream(out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if !n.in.IsSymlink() {
		return nil, syscall.EINVAL
	}
	return []byte(n.in.Target), 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.in.Xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	size := 0
	for _, x := range n.in.Xattrs {
		size += len(x.Name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), 0
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, x := range n.in.Xattrs {
		off += copy(dest[off:], x.Name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	st := n.mfs.r.Meta().Stats
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = uint64(st.Bytes+4095) / 4096
	out.Files = st.Inodes
	out.NameLen = flist.MaxNameLen
	return 0
}

func (n *node) loadChunks() ([]flist.Chunk, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.loaded {
		return n.chunks, nil
	}
	c, err := n.mfs.r.Chunks(n.in.Ino)
	if err != nil {
		return nil, err
	}
	n.chunks, n.loaded = c, true
	return c, nil
}

// passthroughKey names the cache object that holds the whole file: the
// chunk itself for one-chunk files, else the assembled file.
func passthroughKey(chunks []flist.Chunk) cache.Key {
	if len(chunks) == 1 {
		return cache.ChunkKey(chunks[0].Ref)
	}
	refs := make([]chunkstore.Ref, len(chunks))
	for i, c := range chunks {
		refs[i] = c.Ref
	}
	return cache.FileKey(refs)
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if !n.in.IsRegular() {
		return nil, 0, syscall.EINVAL
	}
	chunks, err := n.loadChunks()
	if err != nil {
		n.mfs.log.Error("open", "ino", n.in.Ino, "err", err)
		return nil, 0, errno(err)
	}
	h := &handle{n: n}
	n.mu.Lock()
	defer n.mu.Unlock()
	// The kernel refuses to mix passthrough and cached opens of one inode
	// (ETXTBSY), so follow whatever mode open handles already use.
	if n.openPT > 0 {
		n.openPT++
		n.mfs.m.opens.WithLabelValues("passthrough").Inc()
		return &ptHandle{handle: h, fd: int(n.ptFile.Fd())}, 0, 0
	}
	if n.openCache == 0 && len(chunks) > 0 && n.mfs.passthrough.Load() && n.mfs.cache != nil {
		key := passthroughKey(chunks)
		f, err := n.mfs.cache.OpenFile(key, n.verifyWhole)
		if err == nil {
			n.ptFile = f
			n.openPT = 1
			n.mfs.m.opens.WithLabelValues("passthrough").Inc()
			return &ptHandle{handle: h, fd: int(f.Fd())}, 0, 0
		}
		n.mfs.maybeAssemble(n, chunks)
	}
	n.openCache++
	n.mfs.m.opens.WithLabelValues("fuse").Inc()
	return h, gofuse.FOPEN_KEEP_CACHE, 0
}

// verifyWhole checks an assembled file written by another process against
// the chunk list.
func (n *node) verifyWhole(f *os.File, size int64) error {
	if size != n.in.Size {
		return chunkstore.ErrCorrupt
	}
	buf := make([]byte, chunkstore.MaxChunkSize)
	for _, c := range n.chunks {
		b := buf[:c.Size]
		if _, err := f.ReadAt(b, c.Offset); err != nil && err != io.EOF {
			return err
		}
		if blake3.Sum256(b) != c.Ref {
			return chunkstore.ErrCorrupt
		}
	}
	return nil
}

// maybeAssemble builds the passthrough file of a multi-chunk file in the
// background once all its chunks are local.
func (m *mountFS) maybeAssemble(n *node, chunks []flist.Chunk) {
	if len(chunks) < 2 || m.cache == nil || !m.passthrough.Load() || n.in.Size > m.cache.MaxBytes()/4 {
		return
	}
	key := passthroughKey(chunks)
	m.mu.Lock()
	if m.assembling[key] || m.ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	for _, c := range chunks {
		if !m.src.cached(c) {
			m.mu.Unlock()
			return
		}
	}
	m.assembling[key] = true
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			delete(m.assembling, key)
			m.mu.Unlock()
		}()
		if m.cache.Has(key) {
			return
		}
		err := m.cache.PutFrom(key, n.in.Size, func(w io.Writer) error {
			for _, c := range chunks {
				data, err := m.chunkBytes(c)
				if err != nil {
					return err
				}
				if _, err := w.Write(data); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			m.log.Debug("assemble", "ino", n.in.Ino, "err", err)
			return
		}
		m.m.assembled.Inc()
	}()
}

func (m *mountFS) chunkBytes(c flist.Chunk) ([]byte, error) {
	if m.cache != nil {
		if b, err := m.cache.Get(cache.ChunkKey(c.Ref)); err == nil && len(b) == int(c.Size) {
			return b, nil
		}
	}
	return m.src.get(m.ctx, c)
}

// handle reads a file through the daemon.
type handle struct {
	n       *node
	lastEnd atomic.Int64
}

var (
	_ fs.FileReader   = (*handle)(nil)
	_ fs.FileReleaser = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	n := h.n
	size := n.in.Size
	if off >= size || len(dest) == 0 {
		return gofuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), size)
	chunks := n.chunks
	i := sort.Search(len(chunks), func(i int) bool { return chunks[i].Offset+int64(chunks[i].Size) > off })
	pos := off
	for pos < end && i < len(chunks) {
		c := chunks[i]
		k, err := n.mfs.src.readAt(ctx, c, dest[pos-off:end-off], pos-c.Offset)
		if err != nil {
			n.mfs.log.Warn("read failed", "ino", n.in.Ino, "offset", pos, "chunk", c.Ref.Short(), "err", err)
			n.mfs.m.readErrors.Inc()
			return nil, errno(err)
		}
		if k == 0 {
			break
		}
		pos += int64(k)
		if pos >= c.Offset+int64(c.Size) {
			i++
		}
	}
	n.mfs.m.readBytes.Add(float64(pos - off))
	// Sequential readers get the next chunks fetched ahead.
	// (The window starts after the chunk holding the last byte read.)
	if prev := h.lastEnd.Swap(pos); (prev == off || off == 0) && n.mfs.readahead > 0 && pos > off {
		j := i
		if j == len(chunks) || chunks[j].Offset >= pos {
			j--
		}
		if j+1 < len(chunks) {
			n.mfs.src.prefetchChunks(chunks[j+1 : min(len(chunks), j+1+n.mfs.readahead)])
		}
	}
	return gofuse.ReadResultData(dest[:pos-off]), 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	n := h.n
	n.mu.Lock()
	n.openCache--
	chunks := n.chunks
	n.mu.Unlock()
	n.mfs.maybeAssemble(n, chunks)
	if f := testAfterCachedRelease.Load(); f != nil {
		(*f)()
	}
	return 0
}

// testAfterCachedRelease, when set by a test, runs at the end of a
// daemon-served handle's Release (to widen a race window).
var testAfterCachedRelease atomic.Pointer[func()]

// ptHandle is a file served by the kernel from a cache file (FUSE
// passthrough). Read is only a fallback if the kernel does not.
type ptHandle struct {
	*handle
	fd int
}

var _ fs.FilePassthroughFder = (*ptHandle)(nil)

func (h *ptHandle) PassthroughFd() (int, bool) { return h.fd, true }

func (h *ptHandle) Release(ctx context.Context) syscall.Errno {
	n := h.n
	n.mu.Lock()
	n.openPT--
	if n.openPT == 0 && n.ptFile != nil {
		n.ptFile.Close()
		n.ptFile = nil
	}
	n.mu.Unlock()
	return 0
}
