package flist

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
)

// ChunkRefs calls fn for the Ref of every file chunk of the flist, in key
// order (one range scan, no tree walk). A Ref shared by several files or
// offsets is reported each time.
func (r *Reader) ChunkRefs(fn func(chunkstore.Ref) error) (err error) {
	lo := []byte{kindChunk}
	hi := []byte{kindChunk + 1}
	it, err := r.iter(lo, hi)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := it.Close(); err == nil && cerr != nil {
			err = wrapIterErr(cerr)
		}
	}()
	for kv := it.SeekGE(lo, 0); kv != nil; kv = it.Next() {
		v, err := valueOf(kv)
		if err != nil {
			return err
		}
		k := kv.K.UserKey
		if len(k) != 17 {
			return corruptf("chunk key of %d bytes", len(k))
		}
		c, err := decodeChunk(Ino(binary.BigEndian.Uint64(k[1:9])), k, v)
		if err != nil {
			return err
		}
		if err := fn(c.Ref); err != nil {
			return err
		}
	}
	return wrapIterErr(it.Error())
}

// MarkStored marks every chunk an flist stored under ref keeps alive: the
// chunks and manifests of the flist file (a blob) and every file chunk it
// lists. It is what the chunk store's garbage collector walks for each
// registered flist.
func MarkStored(ctx context.Context, f chunkstore.Fetcher, ref chunkstore.Ref, mark func(chunkstore.Ref)) error {
	if err := blob.Refs(ctx, f, ref, func(r chunkstore.Ref) error { mark(r); return nil }); err != nil {
		return fmt.Errorf("flist %s: %w", ref.Short(), err)
	}
	r, err := OpenStored(ctx, f, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.ChunkRefs(func(c chunkstore.Ref) error { mark(c); return nil })
}
