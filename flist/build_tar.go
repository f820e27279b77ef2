package flist

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// Compression of an input stream, detected from its magic bytes.
type Compression int

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

func (c Compression) String() string {
	return [...]string{"none", "gzip", "zstd"}[c]
}

// DetectCompression peeks at br and reports the stream's compression.
func DetectCompression(br *bufio.Reader) Compression {
	head, _ := br.Peek(4)
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return Gzip
	case len(head) >= 4 && bytes.Equal(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	}
	return Uncompressed
}

// Decompress returns a reader of r's decompressed content (gzip, zstd or
// plain, detected). Close releases decoder resources.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	c := DetectCompression(br)
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, c, fmt.Errorf("%w: gzip: %v", ErrBadArchive, err)
		}
		return zr, c, nil
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, c, fmt.Errorf("%w: zstd: %v", ErrBadArchive, err)
		}
		return zr.IOReadCloser(), c, nil
	}
	return io.NopCloser(br), c, nil
}

// countingReader counts bytes read, for progress.
type countingReader struct {
	r io.Reader
	n func(int)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 && c.n != nil {
		c.n(n)
	}
	return n, err
}

// BuildTar builds a tree from a tar, tar.gz or tar.zst stream holding a root
// file system. Entries with absolute names or ".." are refused
// (ErrUnsafePath), device nodes need Options.AllowDevices, a truncated or
// corrupt stream is ErrBadArchive. Symlinks are stored as data; an entry
// below a symlink is refused rather than followed.
func BuildTar(ctx context.Context, r io.Reader, opts *Options) (*Tree, error) {
	b, err := newBuilder(ctx, opts)
	if err != nil {
		return nil, err
	}
	t := NewTree()
	if err := b.applyLayer(t, r, false); err != nil {
		return b.abort(err)
	}
	return b.finish(t, "tar")
}

// op is one parsed archive entry, applied to the tree after the layer's
// whiteouts.
type op struct {
	parts    []string
	node     *Node    // nil for hard links
	linkTo   []string // hard link target
	whiteout bool     // remove parts
	opaque   bool     // clear the directory parts
	name     string   // original name, for errors
}

// applyLayer reads one tar stream (compressed or not) and applies it to t.
// With layer set, OCI whiteouts (.wh.NAME, .wh..wh..opq) remove entries of
// the layers below.
func (b *builder) applyLayer(t *Tree, r io.Reader, layer bool) error {
	zr, _, err := Decompress(&countingReader{r: r, n: func(n int) { b.input.Add(int64(n)) }})
	if err != nil {
		return err
	}
	defer zr.Close()
	ops, err := b.readTar(zr, layer)
	if err != nil {
		return err
	}
	if layer {
		for _, o := range ops {
			switch {
			case o.opaque:
				t.Clear(o.parts, nil)
			case o.whiteout:
				t.Remove(o.parts)
			}
		}
	}
	for _, o := range ops {
		if o.opaque || o.whiteout {
			continue
		}
		if o.linkTo != nil {
			target, err := t.Lookup(o.linkTo)
			if err != nil {
				return fmt.Errorf("%w: hard link %q to missing %q", ErrBadArchive, o.name, strings.Join(o.linkTo, "/"))
			}
			if target.IsDir() {
				return fmt.Errorf("%w: hard link %q to a directory", ErrBadArchive, o.name)
			}
			if len(o.parts) == 0 {
				return fmt.Errorf("%w: hard link at the root", ErrBadArchive)
			}
			if err := t.Put(o.parts, target); err != nil {
				return fmt.Errorf("%q: %w", o.name, err)
			}
			continue
		}
		if err := t.Put(o.parts, o.node); err != nil {
			return fmt.Errorf("%q: %w", o.name, err)
		}
	}
	return nil
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

func (b *builder) readTar(r io.Reader, layer bool) ([]op, error) {
	tr := tar.NewReader(r)
	var ops []op
	seen := 0
	for {
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			if seen == 0 {
				return nil, fmt.Errorf("%w: empty or not a tar archive", ErrBadArchive)
			}
			return ops, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v (truncated or corrupt?)", ErrBadArchive, err)
		}
		seen++
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader:
			continue
		}
		parts, err := CleanArchivePath(hdr.Name)
		if err != nil {
			return nil, err
		}
		o := op{parts: parts, name: hdr.Name}
		if layer && len(parts) > 0 {
			base := parts[len(parts)-1]
			if base == opaqueMarker {
				o.parts, o.opaque = parts[:len(parts)-1], true
				ops = append(ops, o)
				continue
			}
			if strings.HasPrefix(base, whiteoutPrefix) {
				name := strings.TrimPrefix(base, whiteoutPrefix)
				if err := CheckName(name); err != nil {
					return nil, fmt.Errorf("whiteout %q: %w", hdr.Name, err)
				}
				o.parts = append(append([]string(nil), parts[:len(parts)-1]...), name)
				o.whiteout = true
				ops = append(ops, o)
				continue
			}
		}
		if hdr.Typeflag == tar.TypeLink {
			target, err := CleanArchivePath(hdr.Linkname)
			if err != nil {
				return nil, fmt.Errorf("hard link %q: %w", hdr.Name, err)
			}
			if len(target) == 0 {
				return nil, fmt.Errorf("%w: hard link %q to the root", ErrBadArchive, hdr.Name)
			}
			o.linkTo = target
			ops = append(ops, o)
			b.entry(hdr.Name, false)
			continue
		}
		n, err := b.tarNode(hdr, tr)
		if err != nil {
			return nil, err
		}
		if len(parts) == 0 && !n.IsDir() {
			return nil, fmt.Errorf("%w: entry %q replaces the root with a %s", ErrBadArchive, hdr.Name, TypeName(n.Mode))
		}
		o.node = n
		ops = append(ops, o)
		b.entry(hdr.Name, n.IsRegular())
	}
}

func (b *builder) tarNode(hdr *tar.Header, tr *tar.Reader) (*Node, error) {
	perm := uint32(hdr.Mode) & PermMask
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 0xffffffff || int64(hdr.Gid) > 0xffffffff {
		return nil, fmt.Errorf("%w: %q has owner %d:%d", ErrBadArchive, hdr.Name, hdr.Uid, hdr.Gid)
	}
	n := &Node{Inode: Inode{UID: uint32(hdr.Uid), GID: uint32(hdr.Gid), Mtime: hdr.ModTime.UTC(), Atime: hdr.AccessTime.UTC(), Ctime: hdr.ChangeTime.UTC()}}
	if hdr.AccessTime.IsZero() {
		n.Atime = n.Mtime
	}
	if hdr.ChangeTime.IsZero() {
		n.Ctime = n.Mtime
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if name == "" || len(name) > MaxXattrName || len(v) > MaxXattrValue || strings.IndexByte(name, 0) >= 0 {
				return nil, fmt.Errorf("%w: %q has a bad xattr %q", ErrBadArchive, hdr.Name, name)
			}
			n.Xattrs = append(n.Xattrs, Xattr{Name: name, Value: []byte(v)})
		}
	}
	if len(n.Xattrs) > MaxXattrs {
		return nil, fmt.Errorf("%w: %q has %d xattrs", ErrBadArchive, hdr.Name, len(n.Xattrs))
	}
	sortXattrs(n.Xattrs)
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.Mode = TypeDir | perm
	case tar.TypeReg, '\x00', tar.TypeGNUSparse: // '\x00': pre-POSIX regular file
		n.Mode = TypeReg | perm
		if hdr.Size < 0 || hdr.Size > MaxFileSize {
			return nil, fmt.Errorf("%w: %q has size %d", ErrBadArchive, hdr.Name, hdr.Size)
		}
		n.Size = hdr.Size
		var err error
		if n.Chunks, err = b.chunk(tr, hdr.Size); err != nil {
			return nil, fmt.Errorf("%q: %w", hdr.Name, err)
		}
	case tar.TypeSymlink:
		n.Mode = TypeSymlink | 0o777
		if hdr.Linkname == "" || len(hdr.Linkname) > MaxTargetLen || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return nil, fmt.Errorf("%w: symlink %q has an unusable target", ErrBadArchive, hdr.Name)
		}
		n.Target = hdr.Linkname
		n.Size = int64(len(hdr.Linkname))
	case tar.TypeChar, tar.TypeBlock:
		if !b.opts.AllowDevices {
			return nil, refuseDevice(hdr.Name)
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor > 0xfffff {
			return nil, fmt.Errorf("%w: %q has device %d:%d", ErrBadArchive, hdr.Name, hdr.Devmajor, hdr.Devminor)
		}
		n.Mode = TypeChar | perm
		if hdr.Typeflag == tar.TypeBlock {
			n.Mode = TypeBlock | perm
		}
		n.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		n.Mode = TypeFifo | perm
	default:
		return nil, fmt.Errorf("%w: %q has unsupported entry type %q", ErrBadArchive, hdr.Name, hdr.Typeflag)
	}
	return n, nil
}
