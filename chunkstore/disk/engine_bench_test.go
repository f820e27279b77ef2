package disk_test

// This file holds the benchmark behind the design choice in doc.go: shards
// stored as pebble values directly ("pebble", and "pebble-vsep" with pebble's
// experimental blob-file value separation) versus the store's log-structured
// segment files with a pebble index ("segments"). The pebble engines live
// here only, as the losing alternatives.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/slogx"
)

// pebbleValues stores each shard as one pebble value: 20-byte header
// (size, chunk, sum, written) then the data.
type pebbleValues struct{ db *pebble.DB }

func openPebbleValues(dir string, vsep bool) (*pebbleValues, error) {
	opts := &pebble.Options{Logger: slogx.Pebble{L: slogx.Discard}}
	if vsep {
		opts.FormatMajorVersion = pebble.FormatValueSeparation
		opts.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
			return pebble.ValueSeparationPolicy{Enabled: true, MinimumSize: 1024, MaxBlobReferenceDepth: 10, TargetGarbageRatio: 0.2}
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &pebbleValues{db: db}, nil
}

func (p *pebbleValues) PutShards(_ context.Context, shards []chunkstore.Shard) error {
	b := p.db.NewBatch()
	defer b.Close()
	for _, sh := range shards {
		v := make([]byte, 20+len(sh.Data))
		binary.LittleEndian.PutUint32(v[0:], sh.Size)
		binary.LittleEndian.PutUint32(v[4:], sh.ChunkSize)
		binary.LittleEndian.PutUint32(v[8:], sh.Sum)
		copy(v[20:], sh.Data)
		if err := b.Set(sh.Key.AppendBinary(nil), v, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

func (p *pebbleValues) GetShards(_ context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	res := make([]chunkstore.ShardResult, len(keys))
	for i, k := range keys {
		v, closer, err := p.db.Get(k.AppendBinary(nil))
		if errors.Is(err, pebble.ErrNotFound) {
			res[i].Err = chunkstore.ErrNotFound
			continue
		}
		if err != nil {
			return nil, err
		}
		sh := chunkstore.Shard{ShardInfo: chunkstore.ShardInfo{Key: k,
			Size: binary.LittleEndian.Uint32(v[0:]), ChunkSize: binary.LittleEndian.Uint32(v[4:]), Sum: binary.LittleEndian.Uint32(v[8:])},
			Data: append([]byte(nil), v[20:]...)}
		closer.Close()
		res[i].Shard, res[i].Err = sh, sh.Verify()
	}
	return res, nil
}

type engine interface {
	PutShards(context.Context, []chunkstore.Shard) error
	GetShards(context.Context, []chunkstore.ShardKey) ([]chunkstore.ShardResult, error)
}

func openEngine(b *testing.B, name string) engine {
	dir := b.TempDir()
	switch name {
	case "segments":
		s, err := disk.Open(disk.Config{Dir: dir, CompactInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	default:
		p, err := openPebbleValues(dir, name == "pebble-vsep")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.db.Close() })
		return p
	}
}

// BenchmarkEngine compares the designs: 8 concurrent writers of synced
// shards, then 8 concurrent readers of random stored shards.
//
//	go test -run=^$ -bench=Engine -benchtime=200x ./chunkstore/disk
func BenchmarkEngine(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		for _, name := range []string{"segments", "pebble", "pebble-vsep"} {
			payloads := make([][]byte, 16)
			for i := range payloads {
				payloads[i] = storetest.Data(uint64(i), size)
			}
			mk := func(i int64) chunkstore.Shard {
				var ref chunkstore.Ref
				binary.LittleEndian.PutUint64(ref[:], uint64(i)*0x9e3779b97f4a7c15)
				ref[31] = 1
				k := chunkstore.ShardKey{Ref: ref, Profile: chunkstore.Profile{K: 4, M: 2}, Index: 1}
				return chunkstore.NewShard(k, 4*size, payloads[i%16])
			}
			e := openEngine(b, name)
			var stored atomic.Int64
			b.Run(fmt.Sprintf("%s/put/%dKiB", name, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := stored.Add(1)
						if err := e.PutShards(context.Background(), []chunkstore.Shard{mk(i)}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			var idx atomic.Int64
			b.Run(fmt.Sprintf("%s/get/%dKiB", name, size>>10), func(b *testing.B) {
				n := stored.Load()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := idx.Add(7919)%n + 1
						r, err := e.GetShards(context.Background(), []chunkstore.ShardKey{mk(i).Key})
						if err != nil || r[0].Err != nil {
							b.Errorf("get %d: %v %v", i, err, r[0].Err)
							return
						}
					}
				})
			})
		}
	}
}
