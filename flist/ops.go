package flist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
)

// Put writes the tree as an flist file into the chunk store (as a blob) and
// returns the file's Ref, its size and the metadata written.
func Put(ctx context.Context, store chunkstore.Receiver, t *Tree) (chunkstore.Ref, int64, Meta, error) {
	var buf bytes.Buffer
	meta, err := t.Write(&buf)
	if err != nil {
		return chunkstore.Ref{}, 0, meta, err
	}
	ref, size, err := putBlob(ctx, store, &buf)
	if err != nil {
		return chunkstore.Ref{}, 0, meta, fmt.Errorf("flist: store flist file: %w", err)
	}
	return ref, size, meta, nil
}

// putBlob stores r as a chunkstore blob and returns its Ref and size.
func putBlob(ctx context.Context, store chunkstore.Receiver, r io.Reader) (chunkstore.Ref, int64, error) {
	var size int64
	ref, err := blob.Write(ctx, store, r, func(n int64) { size = n })
	return ref, size, err
}

// PutFile stores an existing flist file (already validated by the caller)
// into the chunk store and returns its Ref and size.
func PutFile(ctx context.Context, store chunkstore.Receiver, r io.Reader) (chunkstore.Ref, int64, error) {
	ref, size, err := putBlob(ctx, store, r)
	if err != nil {
		return chunkstore.Ref{}, 0, fmt.Errorf("flist: store flist file: %w", err)
	}
	return ref, size, nil
}

// OpenStored opens (and validates) the flist file stored in the chunk store
// under ref. ctx bounds the fetches made through the returned Reader.
func OpenStored(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref) (*Reader, error) {
	br, err := blob.Open(ctx, f, ref)
	if err != nil {
		return nil, fmt.Errorf("flist %s: %w", ref.Short(), err)
	}
	r, err := Open(ctx, br, br.Size(), nil)
	if err != nil {
		return nil, fmt.Errorf("flist %s: %w", ref.Short(), err)
	}
	return r, nil
}

// ReadStored returns the bytes of the flist file stored under ref.
func ReadStored(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref) ([]byte, error) {
	br, err := blob.Open(ctx, f, ref)
	if err != nil {
		return nil, fmt.Errorf("flist %s: %w", ref.Short(), err)
	}
	return io.ReadAll(io.NewSectionReader(br, 0, br.Size()))
}

// StoredReaderAt returns a ReaderAt over the flist file stored under ref
// and its size, fetching pieces on demand.
func StoredReaderAt(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref) (io.ReaderAt, int64, error) {
	br, err := blob.Open(ctx, f, ref)
	if err != nil {
		return nil, 0, fmt.Errorf("flist %s: %w", ref.Short(), err)
	}
	return br, br.Size(), nil
}

// Info is what inspect shows.
type Info struct {
	Meta
	FileSize int64 `json:"file_size"` // bytes of the flist file itself
}

// Inspect returns the flist's metadata and statistics.
func (r *Reader) Inspect() Info { return Info{Meta: r.meta, FileSize: r.size} }

// List returns the entries of the directory at path (or the entry itself
// when path is not a directory), with their inodes.
func (r *Reader) List(path string) ([]Entry, error) {
	in, err := r.Resolve(path)
	if err != nil {
		return nil, err
	}
	parts, _ := SplitPath(path)
	base := strings.Join(parts, "/")
	if !in.IsDir() {
		return []Entry{{Path: base, Inode: in}}, nil
	}
	ents, err := r.ReadDir(in.Ino)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(ents))
	for _, d := range ents {
		cin, err := r.Inode(d.Ino)
		if err != nil {
			return nil, err
		}
		p := d.Name
		if base != "" {
			p = base + "/" + d.Name
		}
		out = append(out, Entry{Path: p, Inode: cin})
	}
	return out, nil
}

// Cat writes the content of the regular file at path to w, fetching and
// verifying its chunks (a few in parallel, written in order).
func (r *Reader) Cat(ctx context.Context, f chunkstore.Fetcher, path string, w io.Writer) error {
	in, err := r.Resolve(path)
	if err != nil {
		return err
	}
	if in.IsDir() {
		return fmt.Errorf("%w: %s", ErrIsDir, path)
	}
	if !in.IsRegular() {
		return fmt.Errorf("flist: %s is a %s, not a regular file", path, TypeName(in.Mode))
	}
	chunks, err := r.Chunks(in.Ino)
	if err != nil {
		return err
	}
	return WriteChunks(ctx, f, chunks, w, 4)
}

// WriteChunks fetches chunks (parallel ahead of the writer, in order) and
// writes their verified content to w.
func WriteChunks(ctx context.Context, f chunkstore.Fetcher, chunks []Chunk, w io.Writer, parallel int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type res struct {
		data []byte
		err  error
	}
	results := make([]chan res, len(chunks))
	for i := range results {
		results[i] = make(chan res, 1)
	}
	sem := make(chan struct{}, max(parallel, 1))
	go func() {
		for i, c := range chunks {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				for j := i; j < len(chunks); j++ {
					results[j] <- res{err: ctx.Err()}
				}
				return
			}
			go func(i int, c Chunk) {
				data, err := FetchChunk(ctx, f, c)
				results[i] <- res{data, err}
			}(i, c)
		}
	}()
	for i := range chunks {
		r := <-results[i]
		<-sem
		if r.err != nil {
			return r.err
		}
		if _, err := w.Write(r.data); err != nil {
			return err
		}
	}
	return nil
}

// FetchChunk fetches one chunk and verifies its Ref and size.
func FetchChunk(ctx context.Context, f chunkstore.Fetcher, c Chunk) ([]byte, error) {
	data, err := f.Fetch(ctx, c.Ref)
	if err != nil {
		return nil, fmt.Errorf("flist: chunk %s: %w", c.Ref.Short(), err)
	}
	if len(data) != int(c.Size) || chunkstore.Sum(data) != c.Ref {
		return nil, fmt.Errorf("flist: chunk %s: %w: content does not match its ref", c.Ref.Short(), chunkstore.ErrCorrupt)
	}
	return data, nil
}

// Merge combines trees into a new one; the first tree that has a path wins
// it (directories present in several trees are merged recursively, as
// 0-hub's merge did). Metadata (image config, labels) comes from the first
// tree that has it. The input trees must not be used afterwards.
func Merge(trees ...*Tree) (*Tree, error) {
	if len(trees) == 0 {
		return nil, errors.New("flist: merge needs at least one flist")
	}
	out := &Tree{Root: trees[0].Root, Meta: Meta{}}
	var sources []string
	for i, t := range trees {
		if i > 0 {
			mergeInto(out.Root, t.Root)
		}
		if out.Meta.Image == nil && t.Meta.Image != nil {
			out.Meta.Image = t.Meta.Image
		}
		for k, v := range t.Meta.Labels {
			if out.Meta.Labels == nil {
				out.Meta.Labels = map[string]string{}
			}
			if _, ok := out.Meta.Labels[k]; !ok {
				out.Meta.Labels[k] = v
			}
		}
		if out.Meta.Chunking == "" {
			out.Meta.Chunking = t.Meta.Chunking
		}
		sources = append(sources, t.Meta.Source)
	}
	out.Meta.Source = "merge(" + strings.Join(sources, ",") + ")"
	return out, nil
}

func mergeInto(dst, src *Node) {
	for name, sc := range src.children {
		dc := dst.children[name]
		switch {
		case dc == nil:
			if dst.children == nil {
				dst.children = map[string]*Node{}
			}
			dst.children[name] = sc
		case dc.IsDir() && sc.IsDir() && dc != sc:
			mergeInto(dc, sc)
		}
	}
}

// ChangeKind classifies a Diff line.
type ChangeKind string

const (
	Added   ChangeKind = "added"
	Removed ChangeKind = "removed"
	Changed ChangeKind = "changed"
)

// Change is one path that differs between two flists. Fields lists what
// changed: type, mode, owner, size, content, mtime, target, rdev, xattrs.
type Change struct {
	Path   string     `json:"path"`
	Kind   ChangeKind `json:"kind"`
	Fields []string   `json:"fields,omitempty"`
}

// Diff compares flists a and b path by path and returns the differences
// sorted by path. Access times and inode numbers are ignored.
func Diff(a, b *Reader) ([]Change, error) {
	type rec struct {
		in     Inode
		chunks []Chunk
	}
	load := func(r *Reader) (map[string]rec, error) {
		m := map[string]rec{}
		err := r.Walk(func(e Entry) error {
			x := rec{in: e.Inode}
			if e.IsRegular() {
				var err error
				if x.chunks, err = r.Chunks(e.Ino); err != nil {
					return err
				}
			}
			m["/"+e.Path] = x
			return nil
		})
		return m, err
	}
	ma, err := load(a)
	if err != nil {
		return nil, err
	}
	mb, err := load(b)
	if err != nil {
		return nil, err
	}
	var out []Change
	for p, x := range ma {
		y, ok := mb[p]
		if !ok {
			out = append(out, Change{Path: p, Kind: Removed})
			continue
		}
		var f []string
		if x.in.Type() != y.in.Type() {
			f = append(f, "type")
		}
		if x.in.Mode&PermMask != y.in.Mode&PermMask {
			f = append(f, "mode")
		}
		if x.in.UID != y.in.UID || x.in.GID != y.in.GID {
			f = append(f, "owner")
		}
		if x.in.Size != y.in.Size {
			f = append(f, "size")
		}
		if !sameChunks(x.chunks, y.chunks) {
			f = append(f, "content")
		}
		if !x.in.Mtime.Equal(y.in.Mtime) {
			f = append(f, "mtime")
		}
		if x.in.Target != y.in.Target {
			f = append(f, "target")
		}
		if x.in.Rdev != y.in.Rdev {
			f = append(f, "rdev")
		}
		if !sameXattrs(x.in.Xattrs, y.in.Xattrs) {
			f = append(f, "xattrs")
		}
		if len(f) > 0 {
			out = append(out, Change{Path: p, Kind: Changed, Fields: f})
		}
	}
	for p := range mb {
		if _, ok := ma[p]; !ok {
			out = append(out, Change{Path: p, Kind: Added})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func sameChunks(a, b []Chunk) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Ref != b[i].Ref || a[i].Size != b[i].Size {
			return false
		}
	}
	return true
}

func sameXattrs(a, b []Xattr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}
