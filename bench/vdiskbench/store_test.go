package vdiskbench

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/internal/testcluster/loopback"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("bench/vdiskbench")

// BenchmarkClusterPut measures the chunk puts blockd's write-back makes, on
// an in-process 3-node cluster with fsync: chunks of each block size, 128
// in flight. It is the ceiling of a vdisk's sequential write rate.
//
//	go test -run=^$ -bench=ClusterPut -benchtime=2000x ./bench/vdiskbench/
func BenchmarkClusterPut(b *testing.B) {
	for _, size := range []int{16 << 10, 64 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("%dK", size>>10), func(b *testing.B) { clusterPut(b, size, 128) })
	}
}

// BenchmarkClusterPutParallelism: 16 KiB chunks with 16 to 256 in flight
// (blockd's Config.Parallelism).
func BenchmarkClusterPutParallelism(b *testing.B) {
	for _, n := range []int{16, 32, 64, 128, 192, 256, 512} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { clusterPut(b, 16<<10, n) })
	}
}

func clusterPut(b *testing.B, size, inflight int) {
	{
		c, err := localcluster.Start(localcluster.Config{Nodes: 3, Dir: filepath.Join(b.TempDir(), "c"), Prefix: lo, FirstHost: 160})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		bufs := make([][]byte, 256)
		for i := range bufs {
			bufs[i] = make([]byte, size)
			rand.Read(bufs[i])
		}
		b.SetBytes(int64(size))
		b.ResetTimer()
		var wg sync.WaitGroup
		sem := make(chan struct{}, inflight)
		for i := 0; i < b.N; i++ {
			buf := bufs[i%len(bufs)]
			buf[0], buf[1], buf[2] = byte(i), byte(i>>8), byte(i>>16)
			data := append([]byte(nil), buf...)
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := c.Store.Put(context.Background(), data); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
}

// BenchmarkClusterCommitPuts measures the store round trip of one commit
// of a 4k-randwrite-fsync16 workload: blocks and tree leaves put in
// parallel, waiting for all (ns/op is the latency of the round).
//
//	go test -run=^$ -bench=ClusterCommitPuts -benchtime=200x ./bench/vdiskbench/
func BenchmarkClusterCommitPuts(b *testing.B) {
	for _, bs := range []int{16 << 10, 64 << 10} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("%dK-x%d", bs>>10, n), func(b *testing.B) {
				c, err := localcluster.Start(localcluster.Config{Nodes: 3, Dir: filepath.Join(b.TempDir(), "c"), Prefix: lo, FirstHost: 160})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				var chunks [][]byte
				for i := 0; i < n; i++ {
					chunks = append(chunks, make([]byte, bs), make([]byte, 8<<10))
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					var wg sync.WaitGroup
					for _, ch := range chunks {
						rand.Read(ch[:64])
						wg.Go(func() {
							if _, err := c.Store.Put(context.Background(), ch); err != nil {
								b.Error(err)
							}
						})
					}
					wg.Wait()
				}
			})
		}
	}
}

// BenchmarkClusterGet measures the chunk fetches blockd's reads make when
// they miss its caches, on an in-process 3-node cluster: 16 KiB chunks,
// 128 in flight. It is the ceiling of a vdisk's uncached read rate.
//
//	go test -run=^$ -bench=ClusterGet -benchtime=20000x ./bench/vdiskbench/
func BenchmarkClusterGet(b *testing.B) {
	const size, inflight, n = 16 << 10, 128, 4096
	c, err := localcluster.Start(localcluster.Config{Nodes: 3, Dir: filepath.Join(b.TempDir(), "c"), Prefix: lo, FirstHost: 160})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	refs := make([]chunkstore.Ref, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, inflight)
	for i := range refs {
		data := make([]byte, size)
		rand.Read(data)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ref, err := c.Store.Put(context.Background(), data)
			if err != nil {
				b.Error(err)
			}
			refs[i] = ref
		})
	}
	wg.Wait()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ref := refs[i%n]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := c.Store.Fetch(context.Background(), ref); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}
