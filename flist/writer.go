package flist

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2/sstable"
)

// writable adapts an io.Writer to pebble's objstorage.Writable.
type writable struct {
	w   io.Writer
	n   int64
	err error
}

func (w *writable) Write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(p)
	w.n += int64(n)
	w.err = err
	return err
}
func (w *writable) Finish() error { return w.err }
func (w *writable) Abort()        {}

// Write encodes the tree as an flist file to w and returns the metadata
// written (with Stats filled in). Meta.Created defaults to now, Meta.Builder
// and Meta.Format are set by Write.
func (t *Tree) Write(w io.Writer) (Meta, error) {
	nodes, st := t.number()
	meta := t.Meta
	meta.Format = FormatVersion
	meta.Builder = BuilderVersion
	if meta.Created.IsZero() {
		meta.Created = time.Now().UTC()
	}
	meta.Stats = st
	if st.Inodes >= maxInodes {
		return meta, fmt.Errorf("flist: %d inodes is more than the format allows", st.Inodes)
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return meta, fmt.Errorf("flist: encode meta: %w", err)
	}
	out := &writable{w: w}
	sw := sstable.NewWriter(out, sstable.WriterOptions{
		TableFormat: sstable.TableFormatPebblev4,
		Compression: sstable.ZstdCompression,
		BlockSize:   32 << 10,
	})
	fail := func(err error) (Meta, error) {
		_ = sw.Close()
		return meta, fmt.Errorf("flist: write: %w", err)
	}
	if err := sw.Set(metaKey, mj); err != nil {
		return fail(err)
	}
	for _, n := range nodes {
		if n.IsRegular() {
			var off int64
			for i := range n.Chunks {
				n.Chunks[i].Offset = off
				off += int64(n.Chunks[i].Size)
			}
			if off != n.Size {
				return fail(fmt.Errorf("inode %d: chunks cover %d bytes, size is %d", n.Ino, off, n.Size))
			}
		}
		if n.IsSymlink() {
			n.Size = int64(len(n.Target))
		}
		sortXattrs(n.Xattrs)
		if err := checkInode(&n.Inode); err != nil {
			return fail(err)
		}
		if err := sw.Set(inodeKey(n.Ino), encodeInode(&n.Inode)); err != nil {
			return fail(err)
		}
	}
	for _, n := range nodes {
		if !n.IsDir() {
			continue
		}
		for _, name := range n.Names() {
			c := n.children[name]
			if err := sw.Set(direntKey(n.Ino, name), encodeDirent(c.Ino, c.Type())); err != nil {
				return fail(err)
			}
		}
	}
	for _, n := range nodes {
		for _, c := range n.Chunks {
			if err := sw.Set(chunkKey(n.Ino, c.Offset), encodeChunk(c)); err != nil {
				return fail(err)
			}
		}
	}
	if err := sw.Close(); err != nil {
		return meta, fmt.Errorf("flist: write: %w", err)
	}
	return meta, out.err
}

// WriteFile writes the tree to path atomically (temporary file, fsync,
// rename).
func (t *Tree) WriteFile(path string) (Meta, error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return Meta{}, fmt.Errorf("flist: %w", err)
	}
	defer os.Remove(f.Name())
	meta, err := t.Write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return meta, fmt.Errorf("flist: write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return meta, nil
}
