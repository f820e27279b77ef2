package storebench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/reedsolomon"
	"github.com/zeebo/blake3"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/heal"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
)

// Config configures a run. The zero value is the documented benchmark
// (6 nodes, 4+2, 256 MiB of 4 MiB chunks, 8 writers, fsync on).
type Config struct {
	Nodes       int
	Profile     chunkstore.Profile
	Bytes       int64 // data to put
	ChunkSize   int
	Concurrency int
	// Dir holds the nodes' stores (default a new temporary directory,
	// removed afterwards).
	Dir string
	// NoSync turns fsync off in the stores.
	NoSync bool
	// Prefix and FirstHost place the nodes, as in localcluster.Config
	// (default 127.0.0.20 on).
	Prefix    string
	FirstHost int
	Logger    *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Nodes == 0 {
		c.Nodes = 6
	}
	if c.Profile.IsZero() {
		c.Profile = chunkstore.Profile{K: 4, M: 2}
	}
	if c.Bytes == 0 {
		c.Bytes = 256 << 20
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = chunkstore.MaxChunkSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.FirstHost == 0 {
		c.FirstHost = 20
	}
}

// Result holds the measured rates (MB = 10^6 bytes).
type Result struct {
	Nodes     int
	Profile   string
	Chunks    int
	ChunkSize int
	Bytes     int64

	AnchorMBps float64 // reedsolomon encode + BLAKE3, one core
	// DiskMBps is the durable write ceiling of the stores' disk, in chunk
	// bytes per second: the shard bytes of Bytes (Bytes*n/k) written in
	// parallel to one file per node with large writes and one fdatasync
	// each, best of three, measured in the same run. A durable PUT cannot
	// beat it; DiskRatio says where it caps PUT relative to the anchor.
	DiskMBps  float64
	DiskRatio float64 // Disk / Anchor: the highest PUT ratio this disk allows
	PutOfDisk float64 // Put / Disk
	PutMBps   float64 // chunk bytes stored per second
	GetMBps   float64 // chunk bytes read per second

	// Rebuild after one node is lost: RebuildMBps counts the shard bytes
	// rebuilt (the lost node's data); RestoreMBps counts the chunk bytes
	// brought back to full redundancy.
	RebuildSeconds float64
	RebuiltBytes   int64
	RebuildMBps    float64
	RestoreMBps    float64
	RebuildCPU     float64 // CPU-seconds per GB of shard bytes rebuilt

	// Re-encode after a second node is lost and not replaced (4+2 on five
	// nodes becomes 3+2): ReencodeMBps counts the chunk bytes brought back
	// to full redundancy per second, ReencodedBytes the new shards' bytes.
	ReencodeSeconds float64
	ReencodeTo      string // the profile chunks were re-encoded to
	Reencoded       int64
	ReencodedBytes  int64
	ReencodeMBps    float64
	ReencodeCPU     float64 // CPU-seconds per GB of chunk bytes re-encoded
	ReencodeRatio   float64 // Reencode / Put

	// CPU cost of each phase in CPU-seconds per GB of chunk data (process
	// user+system time), a figure that other load on the machine does not
	// distort the way it distorts MB/s.
	AnchorCPU float64
	PutCPU    float64
	GetCPU    float64

	PutRatio     float64 // Put / Anchor
	GetRatio     float64 // Get / Anchor
	RebuildRatio float64 // Rebuild / Put
	RestoreRatio float64 // Restore / Put
}

// String formats the result as a small report.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chunk store: %d nodes, %s, %d chunks of %d KiB (%.0f MiB)\n", r.Nodes, r.Profile, r.Chunks, r.ChunkSize>>10, float64(r.Bytes)/(1<<20))
	fmt.Fprintf(&b, "  anchor (reedsolomon encode + BLAKE3, 1 core)  %8.1f MB/s\n", r.AnchorMBps)
	if r.DiskMBps > 0 {
		fmt.Fprintf(&b, "  disk ceiling (shard bytes, fdatasync)        %8.1f MB/s  %.2fx anchor  (chunk bytes; PUT cannot exceed it)\n", r.DiskMBps, r.DiskRatio)
	}
	fmt.Fprintf(&b, "  PUT                                          %8.1f MB/s  %.2fx anchor  %.2fx disk ceiling\n", r.PutMBps, r.PutRatio, r.PutOfDisk)
	fmt.Fprintf(&b, "  GET                                          %8.1f MB/s  %.2fx anchor\n", r.GetMBps, r.GetRatio)
	fmt.Fprintf(&b, "  rebuild 1 of %d, disk replaced (shard bytes)  %8.1f MB/s  %.2fx PUT  (%.0f MiB in %.1fs)\n", r.Nodes, r.RebuildMBps, r.RebuildRatio, float64(r.RebuiltBytes)/(1<<20), r.RebuildSeconds)
	fmt.Fprintf(&b, "  restore to full redundancy (chunk bytes)     %8.1f MB/s  %.2fx PUT\n", r.RestoreMBps, r.RestoreRatio)
	if r.Reencoded > 0 {
		fmt.Fprintf(&b, "  re-encode, 1 of %d removed (chunk bytes)      %8.1f MB/s  %.2fx PUT  (%d chunks to %s in %.1fs)\n", r.Nodes, r.ReencodeMBps, r.ReencodeRatio, r.Reencoded, r.ReencodeTo, r.ReencodeSeconds)
	}
	fmt.Fprintf(&b, "  CPU per GB: anchor %.2fs, PUT %.2fs, GET %.2fs, rebuild %.2fs, re-encode %.2fs (all processes' cores of this run)\n", r.AnchorCPU, r.PutCPU, r.GetCPU, r.RebuildCPU, r.ReencodeCPU)
	return b.String()
}

// chunkData makes chunk i: a shared random buffer with i written into its
// first bytes, so every chunk is distinct (no dedup) at no generation cost.
func chunkData(base []byte, i int) []byte {
	d := make([]byte, len(base))
	copy(d, base)
	binary.LittleEndian.PutUint64(d, uint64(i)+1)
	return d
}

// Anchor measures reedsolomon encode + BLAKE3 of chunks on one core, in
// chunk bytes per second.
func Anchor(p chunkstore.Profile, chunkSize int, total int64) (float64, error) {
	enc, err := reedsolomon.New(int(p.K), int(p.M), reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return 0, err
	}
	base := data(7, chunkSize)
	n := int(max(total/int64(chunkSize), 8))
	size := chunkstore.ShardSize(chunkSize, int(p.K))
	buf := make([]byte, size*p.N())
	shards := make([][]byte, p.N())
	for i := range shards {
		shards[i] = buf[i*size : (i+1)*size]
	}
	start := time.Now()
	var sink byte
	for i := range n {
		binary.LittleEndian.PutUint64(base, uint64(i))
		sum := blake3.Sum256(base)
		sink ^= sum[0]
		copy(buf, base)
		clear(buf[len(base) : int(p.K)*size])
		if err := enc.Encode(shards); err != nil {
			return 0, err
		}
	}
	el := time.Since(start).Seconds()
	_ = sink
	return float64(n) * float64(chunkSize) / el / 1e6, nil
}

// DiskCeiling writes the shard bytes of total chunk bytes (total*n/k) to
// one file per node in dir, in parallel, with 4 MiB writes and one
// fdatasync per file, and returns the rate in chunk bytes per second: what
// the disk allows a durable PUT at best.
func DiskCeiling(dir string, p chunkstore.Profile, nodes int, total int64) (float64, error) {
	fresh, _, err := diskRates(dir, p, nodes, total, false)
	return fresh, err
}

// DiskRates is DiskCeiling's pass (fresh: new files, as an appending store
// writes) and then the same files written again in place (overwrite: as
// qemu-nbd writes a raw file it has filled, into blocks the file system
// allocated and pages the kernel caches already), in chunk MB/s each. On
// a VM the two can differ twofold: a first write of a block or a page
// costs the host an allocation.
func DiskRates(dir string, p chunkstore.Profile, nodes int, total int64) (fresh, overwrite float64, err error) {
	return diskRates(dir, p, nodes, total, true)
}

func diskRates(dir string, p chunkstore.Profile, nodes int, total int64, again bool) (fresh, overwrite float64, err error) {
	shardBytes := total * int64(p.N()) / int64(p.K)
	per := shardBytes / int64(nodes)
	buf := data(13, 4<<20)
	files := make([]*os.File, nodes)
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}
	}()
	for i := range files {
		if files[i], err = os.Create(fmt.Sprintf("%s/disk-ceiling-%d", dir, i)); err != nil {
			return 0, 0, fmt.Errorf("bench: disk ceiling: %w", err)
		}
	}
	pass := func() (float64, error) {
		start := time.Now()
		errs := make(chan error, nodes)
		for _, f := range files {
			go func() {
				errs <- func() error {
					for n := int64(0); n < per; n += int64(len(buf)) {
						if _, err := f.WriteAt(buf[:min(int64(len(buf)), per-n)], n); err != nil {
							return err
						}
					}
					return f.Sync()
				}()
			}()
		}
		var err error
		for range nodes {
			err = errors.Join(err, <-errs)
		}
		if err != nil {
			return 0, fmt.Errorf("bench: disk ceiling: %w", err)
		}
		return float64(total) / time.Since(start).Seconds() / 1e6, nil
	}
	if fresh, err = pass(); err != nil || !again {
		return fresh, 0, err
	}
	overwrite, err = pass()
	return fresh, overwrite, err
}

// Store runs the benchmark.
func Store(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	res := Result{Nodes: cfg.Nodes, Profile: cfg.Profile.String(), ChunkSize: cfg.ChunkSize}
	n := int(max(cfg.Bytes/int64(cfg.ChunkSize), 1))
	res.Chunks, res.Bytes = n, int64(n)*int64(cfg.ChunkSize)

	anchorBytes := int64(256 << 20)
	c0 := cpuTime()
	anchor, err := Anchor(cfg.Profile, cfg.ChunkSize, anchorBytes)
	if err != nil {
		return res, err
	}
	res.AnchorMBps = anchor
	res.AnchorCPU = perGB(cpuTime()-c0, max(anchorBytes, 8*int64(cfg.ChunkSize)))

	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "zos-bench-store-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}
	if !cfg.NoSync {
		// The virtual disk's rate swings from run to run: the best of
		// three is the ceiling.
		for range 3 {
			r, err := DiskCeiling(dir, cfg.Profile, cfg.Nodes, res.Bytes)
			if err != nil {
				return res, err
			}
			res.DiskMBps = max(res.DiskMBps, r)
		}
		res.DiskRatio = res.DiskMBps / res.AnchorMBps
	}
	c, err := localcluster.Start(localcluster.Config{Nodes: cfg.Nodes, Profile: cfg.Profile, Dir: dir, NoSync: cfg.NoSync, Prefix: cfg.Prefix, FirstHost: cfg.FirstHost, Logger: cfg.Logger})
	if err != nil {
		return res, err
	}
	defer c.Close()
	base := data(11, cfg.ChunkSize)

	// PUT.
	refs := make([]chunkstore.Ref, n)
	// Chunk buffers are reused (Put does not keep data): generating the
	// data costs the PUT measurement 8 bytes per chunk.
	bufs := sync.Pool{New: func() any { d := chunkData(base, 0); return &d }}
	runtime.GC() // each phase pays for its own garbage only
	c0 = cpuTime()
	elapsed, err := parallel(ctx, n, cfg.Concurrency, func(i int) error {
		d := bufs.Get().(*[]byte)
		binary.LittleEndian.PutUint64(*d, uint64(i)+1)
		ref, err := c.Store.Put(ctx, *d)
		bufs.Put(d)
		refs[i] = ref
		return err
	})
	if err != nil {
		return res, fmt.Errorf("bench: put: %w", err)
	}
	res.PutMBps = float64(res.Bytes) / elapsed / 1e6
	res.PutCPU = perGB(cpuTime()-c0, res.Bytes)
	runtime.GC() // each phase pays for its own garbage only
	c0 = cpuTime()

	// GET.
	elapsed, err = parallel(ctx, n, cfg.Concurrency, func(i int) error {
		d, err := c.Store.Fetch(ctx, refs[i])
		if err == nil && len(d) != cfg.ChunkSize {
			err = fmt.Errorf("chunk %d: %d bytes", i, len(d))
		}
		return err
	})
	if err != nil {
		return res, fmt.Errorf("bench: get: %w", err)
	}
	res.GetMBps = float64(res.Bytes) / elapsed / 1e6
	res.GetCPU = perGB(cpuTime()-c0, res.Bytes)

	// Rebuild: the last node's disk dies and is replaced by an empty one
	// (same node, same map); the nodes heal in parallel and rebuild its
	// shards onto it.
	lost := len(c.Nodes) - 1
	if err := c.Replace(lost); err != nil {
		return res, err
	}
	runtime.GC() // each phase pays for its own garbage only
	c0 = cpuTime()
	p, el, err := healAll(ctx, c, cfg)
	if err != nil {
		return res, err
	}
	res.RebuildSeconds = el
	res.RebuiltBytes = p.RebuiltBytes
	res.RebuildMBps = float64(res.RebuiltBytes) / el / 1e6
	res.RestoreMBps = float64(res.Bytes) / el / 1e6
	res.RebuildCPU = perGB(cpuTime()-c0, max(res.RebuiltBytes, 1))

	// Re-encode: a node dies and is removed, not replaced. Five nodes
	// cannot hold six shards one per node, so every chunk is re-encoded to
	// 3+2.
	if to := erasure.FitProfile(cfg.Profile, cfg.Nodes-1); to != cfg.Profile {
		res.ReencodeTo = to.String()
		gone := 0
		c.Stop(gone)
		if err := c.SetState(c.Nodes[gone].ID, placement.Removed); err != nil {
			return res, err
		}
		runtime.GC() // each phase pays for its own garbage only
		c0 = cpuTime()
		p, el, err := healAll(ctx, c, cfg)
		if err != nil {
			return res, err
		}
		res.ReencodeSeconds = el
		res.Reencoded = p.Reprofiled
		res.ReencodedBytes = p.ReprofiledBytes
		res.ReencodeMBps = float64(res.Bytes) / el / 1e6
		res.ReencodeCPU = perGB(cpuTime()-c0, res.Bytes)
		res.ReencodeRatio = res.ReencodeMBps / res.PutMBps
	}
	res.PutRatio = res.PutMBps / res.AnchorMBps
	if res.DiskMBps > 0 {
		res.PutOfDisk = res.PutMBps / res.DiskMBps
	}
	res.GetRatio = res.GetMBps / res.AnchorMBps
	res.RebuildRatio = res.RebuildMBps / res.PutMBps
	res.RestoreRatio = res.RestoreMBps / res.PutMBps
	return res, nil
}

// healAll runs one heal pass on every up node of c in parallel and returns
// their summed progress and the elapsed seconds.
func healAll(ctx context.Context, c *localcluster.Cluster, cfg Config) (heal.Progress, float64, error) {
	var sum heal.Progress
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	start := time.Now()
	for _, nd := range c.Map().Up() {
		n := c.Node(nd.ID)
		st, err := nodeStore(c, n)
		if err != nil {
			return sum, 0, err
		}
		defer st.Close()
		h, err := heal.New(heal.Config{NodeID: n.ID, Local: n.Disk, Store: st, Logger: cfg.Logger})
		if err != nil {
			return sum, 0, err
		}
		wg.Go(func() {
			p, err := h.Run(ctx)
			if err == nil && p.Failed > 0 {
				err = fmt.Errorf("%d chunks not healed: %s", p.Failed, p.LastError)
			}
			mu.Lock()
			defer mu.Unlock()
			sum.RebuiltBytes += p.RebuiltBytes
			sum.Rebuilt += p.Rebuilt
			sum.Reprofiled += p.Reprofiled
			sum.ReprofiledBytes += p.ReprofiledBytes
			sum.Moved += p.Moved
			if err != nil {
				errs = append(errs, fmt.Errorf("heal %s: %w", n.ID, err))
			}
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if len(errs) > 0 {
		return sum, el, errs[0]
	}
	return sum, el, nil
}

// nodeStore returns the cluster store as node n's healer sees it in `zos
// node`: its own shards straight from its disk, the others' over TCP, with
// the cluster store's map history.
func nodeStore(c *localcluster.Cluster, n *localcluster.Node) (*erasure.Store, error) {
	hist := c.Store.History()
	first := c.Store.Map()
	if len(hist) > 0 {
		first = hist[len(hist)-1].Map()
	}
	st, err := erasure.New(erasure.Config{Map: first, Profile: c.Store.Profile(),
		Dialer: erasure.PoolDialer(c.Pool, map[string]chunkstore.ShardStore{n.ID: n.Disk})})
	if err != nil {
		return nil, err
	}
	for i := len(hist) - 2; i >= 0; i-- {
		st.SetMap(hist[i].Map())
	}
	if err := st.SetMap(c.Store.Map()); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func perGB(d time.Duration, bytes int64) float64 { return d.Seconds() / (float64(bytes) / 1e9) }

// parallel runs fn(0..n-1) on workers goroutines and returns the elapsed
// seconds.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return time.Since(start).Seconds(), first
}

// data returns n pseudo-random bytes derived from seed (the same bytes as
// storetest.Data, which this package does not import: it links testing,
// and `zos bench` is part of the product binary).
func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}
