package flist

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// On-disk layout of an flist file: one pebble sstable whose keys are
//
//	0x01 "meta"                          -> JSON Meta (format version, image config, stats)
//	0x02 ino(8, big endian)              -> inode record (see encodeInode)
//	0x03 parent(8) name                  -> child ino(8) type(1): a directory entry
//	0x04 ino(8) offset(8)                -> Ref(32) size(uvarint): one chunk of a file
//
// Keys sort by kind, then inode, so a directory's entries are one contiguous,
// name-sorted range (readdir is a range scan, lookup a point seek) and a
// file's chunks are contiguous and ordered by offset.
const (
	kindMeta   byte = 0x01
	kindInode  byte = 0x02
	kindDirent byte = 0x03
	kindChunk  byte = 0x04
)

var metaKey = []byte{kindMeta, 'm', 'e', 't', 'a'}

func inodeKey(ino Ino) []byte {
	k := make([]byte, 9)
	k[0] = kindInode
	binary.BigEndian.PutUint64(k[1:], uint64(ino))
	return k
}

func direntPrefix(parent Ino) []byte {
	k := make([]byte, 9, 9+16)
	k[0] = kindDirent
	binary.BigEndian.PutUint64(k[1:], uint64(parent))
	return k
}

func direntKey(parent Ino, name string) []byte {
	return append(direntPrefix(parent), name...)
}

func chunkPrefix(ino Ino) []byte {
	k := make([]byte, 9, 17)
	k[0] = kindChunk
	binary.BigEndian.PutUint64(k[1:], uint64(ino))
	return k
}

func chunkKey(ino Ino, off int64) []byte {
	return binary.BigEndian.AppendUint64(chunkPrefix(ino), uint64(off))
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func encodeDirent(child Ino, typ uint32) []byte {
	v := make([]byte, 9)
	binary.BigEndian.PutUint64(v, uint64(child))
	v[8] = byte(typ >> 12)
	return v
}

func decodeDirent(v []byte) (Ino, uint32, error) {
	if len(v) != 9 {
		return 0, 0, corruptf("directory entry value of %d bytes", len(v))
	}
	return Ino(binary.BigEndian.Uint64(v)), uint32(v[8]) << 12, nil
}

func encodeChunk(c Chunk) []byte {
	v := make([]byte, 0, chunkstore.RefSize+5)
	v = append(v, c.Ref[:]...)
	return binary.AppendUvarint(v, uint64(c.Size))
}

func decodeChunk(ino Ino, key, v []byte) (Chunk, error) {
	var c Chunk
	if len(key) != 17 || len(v) < chunkstore.RefSize+1 {
		return c, corruptf("chunk record of inode %d malformed", ino)
	}
	c.Offset = int64(binary.BigEndian.Uint64(key[9:]))
	copy(c.Ref[:], v)
	size, n := binary.Uvarint(v[chunkstore.RefSize:])
	if n <= 0 || chunkstore.RefSize+n != len(v) {
		return c, corruptf("chunk record of inode %d malformed", ino)
	}
	if size == 0 || size > chunkstore.MaxChunkSize {
		return c, corruptf("chunk of inode %d has size %d", ino, size)
	}
	c.Size = uint32(size)
	return c, nil
}

// inodeRecordVersion is the first byte of every inode record.
const inodeRecordVersion = 1

func encodeInode(in *Inode) []byte {
	b := make([]byte, 0, 64+len(in.Target))
	b = append(b, inodeRecordVersion)
	b = binary.AppendUvarint(b, uint64(in.Mode))
	b = binary.AppendUvarint(b, uint64(in.UID))
	b = binary.AppendUvarint(b, uint64(in.GID))
	b = binary.AppendUvarint(b, uint64(in.Size))
	b = appendTime(b, in.Mtime)
	b = appendTime(b, in.Atime)
	b = appendTime(b, in.Ctime)
	b = binary.AppendUvarint(b, in.Rdev)
	b = binary.AppendUvarint(b, uint64(in.Nlink))
	b = binary.AppendUvarint(b, uint64(len(in.Target)))
	b = append(b, in.Target...)
	b = binary.AppendUvarint(b, uint64(len(in.Xattrs)))
	for _, x := range in.Xattrs {
		b = binary.AppendUvarint(b, uint64(len(x.Name)))
		b = append(b, x.Name...)
		b = binary.AppendUvarint(b, uint64(len(x.Value)))
		b = append(b, x.Value...)
	}
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		// Zero time.Time is year 1; store as the epoch so round trips
		// are stable.
		t = time.Unix(0, 0)
	}
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > max {
		d.err = fmt.Errorf("bad integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("bad integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(max uint64) []byte {
	n := d.uvarint(max)
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.err = fmt.Errorf("truncated")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint(999_999_999)
	return time.Unix(sec, int64(nsec)).UTC()
}

func decodeInode(ino Ino, v []byte) (Inode, error) {
	in := Inode{Ino: ino}
	if len(v) == 0 || v[0] != inodeRecordVersion {
		return in, corruptf("inode %d: unknown record version", ino)
	}
	d := decoder{b: v[1:]}
	in.Mode = uint32(d.uvarint(0xffff))
	in.UID = uint32(d.uvarint(0xffffffff))
	in.GID = uint32(d.uvarint(0xffffffff))
	in.Size = int64(d.uvarint(uint64(MaxFileSize)))
	in.Mtime = d.time()
	in.Atime = d.time()
	in.Ctime = d.time()
	in.Rdev = d.uvarint(1<<64 - 1)
	in.Nlink = uint32(d.uvarint(0xffffffff))
	in.Target = string(d.bytes(MaxTargetLen))
	nx := d.uvarint(MaxXattrs)
	if nx > 0 && d.err == nil {
		in.Xattrs = make([]Xattr, 0, nx)
		for i := uint64(0); i < nx && d.err == nil; i++ {
			name := string(d.bytes(MaxXattrName))
			val := d.bytes(MaxXattrValue)
			in.Xattrs = append(in.Xattrs, Xattr{Name: name, Value: append([]byte(nil), val...)})
		}
	}
	if d.err != nil {
		return in, corruptf("inode %d: %v", ino, d.err)
	}
	if len(d.b) != 0 {
		return in, corruptf("inode %d: %d trailing bytes", ino, len(d.b))
	}
	if err := checkInode(&in); err != nil {
		return in, err
	}
	return in, nil
}

// checkInode validates one inode on its own.
func checkInode(in *Inode) error {
	if !validType(in.Mode) {
		return corruptf("inode %d: unknown file type %#o", in.Ino, in.Mode)
	}
	if in.Mode&^(TypeMask|PermMask) != 0 {
		return corruptf("inode %d: mode %#o has stray bits", in.Ino, in.Mode)
	}
	if in.Nlink == 0 {
		return corruptf("inode %d: nlink 0", in.Ino)
	}
	switch in.Type() {
	case TypeSymlink:
		if in.Target == "" || int64(len(in.Target)) != in.Size {
			return corruptf("inode %d: symlink target of %d bytes, size %d", in.Ino, len(in.Target), in.Size)
		}
	case TypeReg:
		if in.Target != "" {
			return corruptf("inode %d: regular file with a link target", in.Ino)
		}
	default:
		if in.Target != "" || in.Size != 0 {
			return corruptf("inode %d: %s with size %d", in.Ino, TypeName(in.Mode), in.Size)
		}
	}
	if in.Type() != TypeChar && in.Type() != TypeBlock && in.Rdev != 0 {
		return corruptf("inode %d: rdev on a %s", in.Ino, TypeName(in.Mode))
	}
	if strings.IndexByte(in.Target, 0) >= 0 {
		return corruptf("inode %d: NUL in symlink target", in.Ino)
	}
	for i, x := range in.Xattrs {
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			return corruptf("inode %d: bad xattr name %q", in.Ino, x.Name)
		}
		if i > 0 && in.Xattrs[i-1].Name >= x.Name {
			return corruptf("inode %d: xattrs not sorted or duplicated (%q)", in.Ino, x.Name)
		}
	}
	return nil
}

// CheckName reports whether name is a safe single path component.
func CheckName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("%w: component %q", ErrUnsafePath, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: component of %d bytes (max %d)", ErrUnsafePath, len(name), MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: component %q contains '/' or NUL", ErrUnsafePath, name)
	}
	return nil
}

// SplitPath splits a slash-separated path inside an flist into safe
// components. "", "/" and "." are the root (no components). Leading "/" and
// "./" are tolerated for paths a user types; ".." and empty or NUL-bearing
// components are refused with ErrUnsafePath. Use CleanArchivePath for
// untrusted archive names, which refuses absolute paths too.
func SplitPath(p string) ([]string, error) {
	if len(p) > MaxPathLen {
		return nil, fmt.Errorf("%w: path of %d bytes", ErrUnsafePath, len(p))
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		if err := CheckName(c); err != nil {
			return nil, fmt.Errorf("%w (in %q)", err, p)
		}
		parts = append(parts, c)
	}
	return parts, nil
}

// CleanArchivePath validates an entry name from an untrusted archive and
// returns it as clean relative components. Absolute names, ".." anywhere,
// NUL bytes and over-long names are refused with ErrUnsafePath; "./" prefixes
// and a trailing "/" are accepted.
func CleanArchivePath(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("%w: absolute path %q", ErrUnsafePath, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return nil, fmt.Errorf("%w: %q contains \"..\"", ErrUnsafePath, name)
		}
	}
	return SplitPath(name)
}

func sortXattrs(xs []Xattr) {
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
}
