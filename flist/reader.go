package flist

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
)

// sharedBlockCache holds decoded sstable blocks for every Reader in the
// process, so repeated lookups neither re-read nor re-decompress.
var sharedBlockCache = pebble.NewCache(64 << 20)

// OpenOptions tune Open.
type OpenOptions struct {
	// SkipValidation skips the full structural scan at open (the sstable
	// checksums of blocks actually read are still verified). Only for
	// files this process wrote itself.
	SkipValidation bool
}

// Reader reads an flist file in place through an io.ReaderAt: a local
// file, a blob in the chunk store or an HTTP range reader. Methods are safe
// for concurrent use.
type Reader struct {
	sst    *sstable.Reader
	meta   Meta
	size   int64
	closer io.Closer
	handle interface{ Close() }
}

type readable struct {
	r    io.ReaderAt
	size int64
}

func (r *readable) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("%w: read past the end of the file (truncated?)", ErrCorrupt)
	}
	n, err := r.r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: short read at %d (truncated?)", ErrCorrupt, off)
	}
	return n, err
}
func (r *readable) Close() error                { return nil }
func (r *readable) Stat() (vfs.FileInfo, error) { return sizeInfo(r.size), nil }

type sizeInfo int64

func (s sizeInfo) Name() string           { return "flist" }
func (s sizeInfo) Size() int64            { return int64(s) }
func (s sizeInfo) Mode() fs.FileMode      { return 0o444 }
func (s sizeInfo) ModTime() time.Time     { return time.Time{} }
func (s sizeInfo) IsDir() bool            { return false }
func (s sizeInfo) Sys() any               { return nil }
func (s sizeInfo) DeviceID() vfs.DeviceID { return vfs.DeviceID{} }

// Open opens the flist file of the given size readable through r, checks
// its format version and (unless opts.SkipValidation) validates the whole
// structure; a corrupt or truncated file is ErrCorrupt. If r is an
// io.Closer, Close closes it.
func Open(ctx context.Context, r io.ReaderAt, size int64, opts *OpenOptions) (rd *Reader, err error) {
	if opts == nil {
		opts = &OpenOptions{}
	}
	defer func() {
		if p := recover(); p != nil {
			rd, err = nil, corruptf("decoder panic: %v", p)
		}
	}()
	if size < 64 {
		return nil, corruptf("file of %d bytes is too small to be an flist", size)
	}
	sr, err := sstable.NewSimpleReadable(&readable{r: r, size: size})
	if err != nil {
		return nil, corruptf("%v", err)
	}
	ropts := sstable.ReaderOptions{}
	h := sharedBlockCache.NewHandle()
	ropts.CacheOpts.CacheHandle = h
	ropts.CacheOpts.FileNum = 1
	sst, err := sstable.NewReader(ctx, sr, ropts)
	if err != nil {
		h.Close()
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return nil, err
	}
	rd = &Reader{sst: sst, size: size, handle: h}
	if c, ok := r.(io.Closer); ok {
		rd.closer = c
	}
	fail := func(err error) (*Reader, error) {
		_ = rd.Close()
		return nil, err
	}
	mv, err := rd.get(metaKey)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return fail(corruptf("no metadata record"))
		}
		return fail(err)
	}
	dec := json.NewDecoder(bytes.NewReader(mv))
	if err := dec.Decode(&rd.meta); err != nil {
		return fail(corruptf("metadata: %v", err))
	}
	if rd.meta.Format < 1 {
		return fail(corruptf("metadata: format %d", rd.meta.Format))
	}
	if rd.meta.Format > FormatVersion {
		return fail(fmt.Errorf("%w: file has format %d, this build reads up to %d; upgrade zos", ErrVersion, rd.meta.Format, FormatVersion))
	}
	if !opts.SkipValidation {
		if err := rd.validate(); err != nil {
			return fail(err)
		}
	}
	return rd, nil
}

// OpenFile opens and validates the flist file at path.
func OpenFile(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flist: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flist: %w", err)
	}
	r, err := Open(context.Background(), f, st.Size(), nil)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Close releases the reader (and closes the underlying ReaderAt if it is an
// io.Closer).
func (r *Reader) Close() error {
	err := r.sst.Close()
	if r.handle != nil {
		r.handle.Close()
	}
	if r.closer != nil {
		if cerr := r.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Meta returns the flist-level metadata.
func (r *Reader) Meta() Meta { return r.meta }

// Size returns the size of the flist file in bytes.
func (r *Reader) Size() int64 { return r.size }

func (r *Reader) iter(lo, hi []byte) (sstable.Iterator, error) {
	it, err := r.sst.NewIter(sstable.NoTransforms, lo, hi, sstable.AssertNoBlobHandles)
	if err != nil {
		return nil, corruptf("%v", err)
	}
	return it, nil
}

func wrapIterErr(err error) error {
	if err == nil || errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func valueOf(kv interface {
	Value([]byte) ([]byte, bool, error)
}) ([]byte, error) {
	v, owned, err := kv.Value(nil)
	if err != nil {
		return nil, wrapIterErr(err)
	}
	if !owned {
		v = append([]byte(nil), v...)
	}
	return v, nil
}

// get returns the value of key, ErrNotFound if absent.
func (r *Reader) get(key []byte) (v []byte, err error) {
	it, err := r.iter(key, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = wrapIterErr(cerr)
		}
	}()
	kv := it.SeekGE(key, 0)
	if kv == nil {
		if err := it.Error(); err != nil {
			return nil, wrapIterErr(err)
		}
		return nil, ErrNotFound
	}
	if !bytes.Equal(kv.K.UserKey, key) {
		return nil, ErrNotFound
	}
	return valueOf(kv)
}

// Inode returns the inode numbered ino.
func (r *Reader) Inode(ino Ino) (Inode, error) {
	v, err := r.get(inodeKey(ino))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Inode{}, fmt.Errorf("%w: inode %d", ErrNotFound, ino)
		}
		return Inode{}, err
	}
	return decodeInode(ino, v)
}

// Lookup returns the entry called name in directory parent.
func (r *Reader) Lookup(parent Ino, name string) (Dirent, error) {
	if err := CheckName(name); err != nil {
		return Dirent{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	v, err := r.get(direntKey(parent, name))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Dirent{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return Dirent{}, err
	}
	ino, typ, err := decodeDirent(v)
	return Dirent{Name: name, Ino: ino, Type: typ}, err
}

// ReadDirFunc calls fn for the entries of directory dir whose name sorts
// after `after` ("" for all), in name order. Returning an error from fn
// stops the scan and returns that error.
func (r *Reader) ReadDirFunc(dir Ino, after string, fn func(Dirent) error) (err error) {
	prefix := direntPrefix(dir)
	it, err := r.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = wrapIterErr(cerr)
		}
	}()
	start := prefix
	if after != "" {
		start = append(direntKey(dir, after), 0)
	}
	for kv := it.SeekGE(start, 0); kv != nil; kv = it.Next() {
		v, err := valueOf(kv)
		if err != nil {
			return err
		}
		ino, typ, err := decodeDirent(v)
		if err != nil {
			return err
		}
		if err := fn(Dirent{Name: string(kv.K.UserKey[len(prefix):]), Ino: ino, Type: typ}); err != nil {
			return err
		}
	}
	return wrapIterErr(it.Error())
}

// ReadDir returns all entries of directory dir in name order.
func (r *Reader) ReadDir(dir Ino) ([]Dirent, error) {
	var out []Dirent
	err := r.ReadDirFunc(dir, "", func(d Dirent) error { out = append(out, d); return nil })
	return out, err
}

// Chunks returns the ordered chunk list of regular file ino.
func (r *Reader) Chunks(ino Ino) (out []Chunk, err error) {
	prefix := chunkPrefix(ino)
	it, err := r.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = wrapIterErr(cerr)
		}
	}()
	var off int64
	for kv := it.SeekGE(prefix, 0); kv != nil; kv = it.Next() {
		v, err := valueOf(kv)
		if err != nil {
			return nil, err
		}
		c, err := decodeChunk(ino, kv.K.UserKey, v)
		if err != nil {
			return nil, err
		}
		if c.Offset != off {
			return nil, corruptf("inode %d: chunk at %d, expected %d", ino, c.Offset, off)
		}
		off += int64(c.Size)
		out = append(out, c)
	}
	return out, wrapIterErr(it.Error())
}

// Resolve returns the inode at a slash-separated path inside the flist
// ("/" or "" is the root). Symlinks are never followed.
func (r *Reader) Resolve(path string) (Inode, error) {
	parts, err := SplitPath(path)
	if err != nil {
		return Inode{}, err
	}
	ino := RootIno
	for i, p := range parts {
		d, err := r.Lookup(ino, p)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return Inode{}, fmt.Errorf("%w: /%s", ErrNotFound, strings.Join(parts[:i+1], "/"))
			}
			return Inode{}, err
		}
		if i < len(parts)-1 && d.Type != TypeDir {
			return Inode{}, fmt.Errorf("%w: /%s", ErrNotDir, strings.Join(parts[:i+1], "/"))
		}
		ino = d.Ino
	}
	return r.Inode(ino)
}

// Entry is one name in a Walk.
type Entry struct {
	Path string // slash-separated, relative to the root; "" for the root
	Inode
}

// Walk calls fn for every name in the flist, depth first in name order.
// Hard-linked inodes are visited once per name. Returning SkipDir for a
// directory skips its children.
func (r *Reader) Walk(fn func(e Entry) error) error {
	root, err := r.Inode(RootIno)
	if err != nil {
		return err
	}
	return r.walk(Entry{Inode: root}, fn)
}

func (r *Reader) walk(e Entry, fn func(Entry) error) error {
	if err := fn(e); err != nil {
		if err == SkipDir {
			return nil
		}
		return err
	}
	if !e.IsDir() {
		return nil
	}
	ents, err := r.ReadDir(e.Ino)
	if err != nil {
		return err
	}
	for _, d := range ents {
		in, err := r.Inode(d.Ino)
		if err != nil {
			return err
		}
		p := d.Name
		if e.Path != "" {
			p = e.Path + "/" + d.Name
		}
		if err := r.walk(Entry{Path: p, Inode: in}, fn); err != nil {
			return err
		}
	}
	return nil
}

// Tree loads the whole flist into a mutable Tree (for merging and
// rewriting). Hard links stay shared nodes.
func (r *Reader) Tree() (*Tree, error) {
	t := &Tree{Meta: r.meta}
	nodes := map[Ino]*Node{}
	var load func(ino Ino) (*Node, error)
	load = func(ino Ino) (*Node, error) {
		if n := nodes[ino]; n != nil {
			return n, nil
		}
		in, err := r.Inode(ino)
		if err != nil {
			return nil, err
		}
		n := &Node{Inode: in}
		nodes[ino] = n
		switch {
		case in.IsRegular():
			if n.Chunks, err = r.Chunks(ino); err != nil {
				return nil, err
			}
		case in.IsDir():
			ents, err := r.ReadDir(ino)
			if err != nil {
				return nil, err
			}
			n.children = make(map[string]*Node, len(ents))
			for _, d := range ents {
				c, err := load(d.Ino)
				if err != nil {
					return nil, err
				}
				n.children[d.Name] = c
			}
		}
		return n, nil
	}
	root, err := load(RootIno)
	if err != nil {
		return nil, err
	}
	t.Root = root
	return t, nil
}

// validate scans every record and checks the structure: records decode,
// inodes are numbered 1..N, entries name existing inodes with safe names
// and matching types, every directory has exactly one parent and reaches the
// root, link counts match, chunk lists are contiguous and cover each file,
// and the stats in the metadata match.
func (r *Reader) validate() (err error) {
	it, err := r.iter(nil, nil)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = wrapIterErr(cerr)
		}
	}()
	n := r.meta.Stats.Inodes
	if n == 0 || n >= maxInodes {
		return corruptf("metadata claims %d inodes", n)
	}
	if n > uint64(r.size) {
		return corruptf("metadata claims %d inodes in a %d-byte file", n, r.size)
	}
	var (
		types   = make([]uint8, n+1) // type >> 12; 0 = not seen
		nlinks  = make([]uint32, n+1)
		sizes   = make([]int64, n+1)
		covered = make([]int64, n+1)
		refs    = make([]uint32, n+1)
		subdirs = make([]uint32, n+1)
		parent  = make([]Ino, n+1)
		st      Stats
		uniq    = map[chunkstore.Ref]struct{}{}
		prev    []byte
		nextIno = Ino(1)
	)
	valid := func(ino Ino) bool { return ino >= 1 && uint64(ino) <= n }
	for kv := it.SeekGE(nil, 0); kv != nil; kv = it.Next() {
		k := kv.K.UserKey
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return corruptf("keys out of order or duplicated")
		}
		prev = append(prev[:0], k...)
		if len(k) == 0 {
			return corruptf("empty key")
		}
		v, err := valueOf(kv)
		if err != nil {
			return err
		}
		switch k[0] {
		case kindMeta:
			if !bytes.Equal(k, metaKey) {
				return corruptf("unknown metadata key %q", k)
			}
		case kindInode:
			if len(k) != 9 {
				return corruptf("inode key of %d bytes", len(k))
			}
			ino := Ino(beUint64(k[1:]))
			if ino != nextIno || !valid(ino) {
				return corruptf("inode %d out of sequence (expected %d of %d)", ino, nextIno, n)
			}
			nextIno++
			in, err := decodeInode(ino, v)
			if err != nil {
				return err
			}
			types[ino] = uint8(in.Type() >> 12)
			nlinks[ino] = in.Nlink
			sizes[ino] = in.Size
			st.Inodes++
			switch in.Type() {
			case TypeDir:
				st.Dirs++
			case TypeReg:
				st.Files++
				st.Bytes += in.Size
			case TypeSymlink:
				st.Symlinks++
			case TypeChar, TypeBlock:
				st.Devices++
			default:
				st.Others++
			}
		case kindDirent:
			if len(k) < 10 {
				return corruptf("directory entry key of %d bytes", len(k))
			}
			p := Ino(beUint64(k[1:9]))
			name := string(k[9:])
			if !valid(p) || types[p] != uint8(TypeDir>>12) {
				return corruptf("entry %q in inode %d, which is not a directory", name, p)
			}
			if err := CheckName(name); err != nil {
				return corruptf("entry in directory %d: %v", p, err)
			}
			c, typ, err := decodeDirent(v)
			if err != nil {
				return err
			}
			if !valid(c) || c == RootIno || types[c] == 0 {
				return corruptf("entry %q names inode %d", name, c)
			}
			if uint8(typ>>12) != types[c] {
				return corruptf("entry %q type does not match inode %d", name, c)
			}
			refs[c]++
			if refs[c] > 1 {
				st.HardLinks++
			}
			if typ == TypeDir {
				if refs[c] > 1 {
					return corruptf("directory inode %d has several names", c)
				}
				subdirs[p]++
				parent[c] = p
			}
		case kindChunk:
			if len(k) != 17 {
				return corruptf("chunk key of %d bytes", len(k))
			}
			ino := Ino(beUint64(k[1:9]))
			if !valid(ino) || types[ino] != uint8(TypeReg>>12) {
				return corruptf("chunk of inode %d, which is not a regular file", ino)
			}
			c, err := decodeChunk(ino, k, v)
			if err != nil {
				return err
			}
			if c.Offset != covered[ino] {
				return corruptf("inode %d: chunk at offset %d, expected %d", ino, c.Offset, covered[ino])
			}
			covered[ino] += int64(c.Size)
			if covered[ino] > sizes[ino] {
				return corruptf("inode %d: chunks cover more than its size %d", ino, sizes[ino])
			}
			st.Chunks++
			if _, ok := uniq[c.Ref]; !ok {
				uniq[c.Ref] = struct{}{}
				st.UniqueChunks++
				st.UniqueBytes += int64(c.Size)
			}
		default:
			return corruptf("unknown record kind %#x", k[0])
		}
	}
	if err := it.Error(); err != nil {
		return wrapIterErr(err)
	}
	if uint64(nextIno-1) != n {
		return corruptf("%d inodes present, metadata says %d", nextIno-1, n)
	}
	if types[RootIno] != uint8(TypeDir>>12) {
		return corruptf("root is not a directory")
	}
	for i := Ino(1); uint64(i) <= n; i++ {
		switch {
		case types[i] == uint8(TypeDir>>12):
			if i != RootIno && refs[i] != 1 {
				return corruptf("directory inode %d has %d names", i, refs[i])
			}
			if nlinks[i] != 2+subdirs[i] {
				return corruptf("directory inode %d: nlink %d, expected %d", i, nlinks[i], 2+subdirs[i])
			}
		default:
			if refs[i] != nlinks[i] {
				return corruptf("inode %d: nlink %d but %d names", i, nlinks[i], refs[i])
			}
			if types[i] == uint8(TypeReg>>12) && covered[i] != sizes[i] {
				return corruptf("inode %d: chunks cover %d of %d bytes", i, covered[i], sizes[i])
			}
		}
	}
	// Every directory must reach the root (no cycles, no orphans).
	state := make([]uint8, n+1) // 0 unknown, 1 visiting, 2 reaches root
	state[RootIno] = 2
	for i := Ino(2); uint64(i) <= n; i++ {
		if types[i] != uint8(TypeDir>>12) || state[i] == 2 {
			continue
		}
		var path []Ino
		j := i
		for state[j] == 0 {
			state[j] = 1
			path = append(path, j)
			j = parent[j]
			if j == 0 {
				return corruptf("directory inode %d is unreachable", i)
			}
		}
		if state[j] == 1 {
			return corruptf("directory cycle through inode %d", j)
		}
		for _, p := range path {
			state[p] = 2
		}
	}
	if st != r.meta.Stats {
		return corruptf("stats do not match contents: metadata %+v, contents %+v", r.meta.Stats, st)
	}
	return nil
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
