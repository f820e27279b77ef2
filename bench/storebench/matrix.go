package storebench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
)

// Anchor and target names of the store workload.
const (
	AnchorCodec = "reedsolomon+blake3"
	AnchorDisk  = "disk-ceiling"
)

// Chunks below SmallChunk are reported in chunks/s as well as MB/s, and
// also PUT in PutMany batches of BatchChunks, BatchesInFlight at a time
// (a chunkstore.Batcher's defaults: blockd's write-back).
const (
	SmallChunk      = 1 << 20
	BatchChunks     = 256
	BatchesInFlight = 4
)

// DefaultSizes are the chunk sizes of the store workload.
var DefaultSizes = []int{16 << 10, 64 << 10, chunkstore.MaxChunkSize}

// MatrixConfig configures Matrix. Zero fields take defaults.
type MatrixConfig struct {
	Nodes   int                // default 6
	Profile chunkstore.Profile // default 4+2
	Sizes   []int              // chunk sizes; default DefaultSizes
	// Bytes of chunks put per size; default 64 MiB.
	Bytes       int64
	Concurrency int // default 8
	// KillNode runs a load of Duration (default 6s) of 4 MiB GETs and PUTs,
	// stops a node a quarter in, replaces its disk at half and heals it:
	// the workload's series shows the dip and the recovery.
	KillNode bool
	Duration time.Duration
	Dir      string
	NoSync   bool
	Prefix   string
	// FirstHost places the nodes as in localcluster.Config.
	FirstHost int
	// Progress, if set, receives a line as each step starts.
	Progress func(string)
}

// Matrix runs the store workload on an in-process cluster of shard servers
// over loopback TCP (the erasure-coded chunk store of `zos node`, without
// Raft): PUT and GET per chunk size with latency percentiles, GET with m
// nodes down, the rebuild of a replaced disk, and with KillNode throughput
// over time across a node's death and rebuild; anchors reedsolomon encode +
// BLAKE3 on one core and the disk's durable write ceiling, in the same run.
func Matrix(ctx context.Context, cfg MatrixConfig) (report.Workload, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 6
	}
	if cfg.Profile.IsZero() {
		cfg.Profile = chunkstore.Profile{K: 4, M: 2}
	}
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = DefaultSizes
	}
	if cfg.Bytes == 0 {
		cfg.Bytes = 64 << 20
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 8
	}
	if cfg.Duration == 0 {
		cfg.Duration = 6 * time.Second
	}
	if cfg.FirstHost == 0 {
		cfg.FirstHost = 20
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	w := report.Workload{Name: "store", Measures: fmt.Sprintf("Chunk PUT/GET through the erasure-coded store (%s) of %d in-process shard servers over loopback TCP, fsync %v; "+
		"anchors: reedsolomon encode + BLAKE3 of the same chunks on one core, and the disk's durable write ceiling (the shard bytes written with one fdatasync per node file).",
		cfg.Profile, cfg.Nodes, !cfg.NoSync)}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "zos-bench-store-")
		if err != nil {
			return w, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var disk float64
	if !cfg.NoSync {
		progress("store: disk ceiling")
		for range 3 {
			r, err := DiskCeiling(dir, cfg.Profile, cfg.Nodes, min(cfg.Bytes, 64<<20))
			if err != nil {
				return w, err
			}
			disk = max(disk, r)
		}
	}
	c, err := localcluster.Start(localcluster.Config{Nodes: cfg.Nodes, Profile: cfg.Profile, Dir: dir, NoSync: cfg.NoSync, Prefix: cfg.Prefix, FirstHost: cfg.FirstHost})
	if err != nil {
		return w, err
	}
	defer c.Close()
	// Anchors in MB/s and, per chunk of size, in chunks/s.
	anchors := func(size int) ([]report.Result, error) {
		a, err := Anchor(cfg.Profile, size, min(cfg.Bytes, 32<<20))
		if err != nil {
			return nil, err
		}
		ops := func(mbps float64) float64 { return mbps * 1e6 / float64(size) }
		out := []report.Result{{Target: AnchorCodec, Anchor: true, Value: a, MBps: a, OpsPerSec: ops(a)}}
		if disk > 0 {
			out = append(out, report.Result{Target: AnchorDisk, Anchor: true, Value: disk, MBps: disk, OpsPerSec: ops(disk)})
		}
		return out, nil
	}
	// Small chunks are counted in chunks/s too: that is what caps vdisk
	// I/O past the caches (16 KiB blocks).
	opsUnit := func(size int) string {
		if size < SmallChunk {
			return "chunks/s"
		}
		return ""
	}
	var last []chunkstore.Ref
	for _, size := range cfg.Sizes {
		n := int(max(cfg.Bytes/int64(size), 8))
		base := data(uint64(size), size)
		an, err := anchors(size)
		if err != nil {
			return w, err
		}
		refs := make([]chunkstore.Ref, n)
		progress(fmt.Sprintf("store: PUT %d chunks of %s", n, kib(size)))
		put, err := timed(ctx, n, cfg.Concurrency, size, func(i int) error {
			d := chunkData(base, i+size)
			ref, err := c.Store.Put(ctx, d)
			refs[i] = ref
			return err
		})
		if err != nil {
			return w, fmt.Errorf("store: put %s: %w", kib(size), err)
		}
		w.Jobs = append(w.Jobs, report.Job{Name: "PUT " + kib(size), Unit: "MB/s", OpsUnit: opsUnit(size), Results: append([]report.Result{put}, an...)})
		if size < SmallChunk {
			// blockd's write-back: a chunkstore.Batcher's PutMany rounds
			// (its default bounds: 256 chunks, 4 batches in flight).
			nb := (n + BatchChunks - 1) / BatchChunks
			progress(fmt.Sprintf("store: PutMany of %d chunks of %s in batches of %d", n, kib(size), BatchChunks))
			pm, err := timedBatches(ctx, nb, BatchesInFlight, func(b int) (int, error) {
				chunks := make([][]byte, 0, BatchChunks)
				for i := b * BatchChunks; i < min(n, (b+1)*BatchChunks); i++ {
					chunks = append(chunks, chunkData(base, i+size+1<<29))
				}
				_, err := c.Store.PutMany(ctx, chunks)
				return len(chunks), err
			}, size)
			if err != nil {
				return w, fmt.Errorf("store: put batches %s: %w", kib(size), err)
			}
			pm.Note = fmt.Sprintf("PutMany × %d, %d in flight; latency per batch", BatchChunks, BatchesInFlight)
			w.Jobs = append(w.Jobs, report.Job{Name: fmt.Sprintf("PUT %s, batches of %d", kib(size), BatchChunks), Unit: "MB/s", OpsUnit: opsUnit(size), Results: append([]report.Result{pm}, an...)})
		}
		get := func() (report.Result, error) {
			return timed(ctx, n, cfg.Concurrency, size, func(i int) error {
				d, err := c.Store.Fetch(ctx, refs[i])
				if err == nil && len(d) != size {
					err = fmt.Errorf("chunk %d: %d bytes", i, len(d))
				}
				return err
			})
		}
		progress(fmt.Sprintf("store: GET %d chunks of %s", n, kib(size)))
		g, err := get()
		if err != nil {
			return w, fmt.Errorf("store: get %s: %w", kib(size), err)
		}
		w.Jobs = append(w.Jobs, report.Job{Name: "GET " + kib(size), Unit: "MB/s", OpsUnit: opsUnit(size), Results: []report.Result{g, an[0]}})
		// Degraded: m nodes down, every chunk decoded from k shards.
		m := int(cfg.Profile.M)
		progress(fmt.Sprintf("store: degraded GET of %s, %d nodes down", kib(size), m))
		for i := range m {
			c.Stop(i)
		}
		g, err = get()
		for i := range m {
			if rerr := c.Restart(i); rerr != nil && err == nil {
				err = rerr
			}
		}
		if err != nil {
			return w, fmt.Errorf("store: degraded get %s: %w", kib(size), err)
		}
		w.Jobs = append(w.Jobs, report.Job{Name: fmt.Sprintf("GET %s, %d down", kib(size), m), Unit: "MB/s", OpsUnit: opsUnit(size), Results: []report.Result{g, an[0]}})
		last = refs
	}

	// Rebuild: the last node's disk is replaced; the nodes heal it.
	progress("store: rebuild of a replaced disk")
	lost := len(c.Nodes) - 1
	if err := c.Replace(lost); err != nil {
		return w, err
	}
	p, el, err := healAll(ctx, c, Config{})
	if err != nil {
		return w, err
	}
	rb := float64(p.RebuiltBytes) / el / 1e6
	rebuild := report.Job{Name: "rebuild 1 disk", Unit: "MB/s", Results: []report.Result{{Target: report.Zos, Value: rb, MBps: rb, Note: "shard bytes rebuilt"}}}
	if disk > 0 {
		rebuild.Results = append(rebuild.Results, report.Result{Target: AnchorDisk, Anchor: true, Value: disk, MBps: disk})
	} else {
		an, _ := anchors(chunkstore.MaxChunkSize)
		rebuild.Results = append(rebuild.Results, an[0])
	}
	w.Jobs = append(w.Jobs, rebuild)

	if cfg.KillNode {
		if err := killNode(ctx, c, cfg, last, &w, progress); err != nil {
			return w, err
		}
	}
	return w, nil
}

// killNode runs GETs of refs and PUTs of 4 MiB chunks for cfg.Duration,
// sampling throughput every 100 ms; a quarter in it stops the last node,
// at half it replaces its disk and heals the cluster.
func killNode(ctx context.Context, c *localcluster.Cluster, cfg MatrixConfig, refs []chunkstore.Ref, w *report.Workload, progress func(string)) error {
	progress(fmt.Sprintf("store: kill a node under load, %v", cfg.Duration))
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var getB, putB atomic.Int64
	var wg sync.WaitGroup
	base := data(99, chunkstore.MaxChunkSize)
	var seq atomic.Int64
	for g := range max(cfg.Concurrency/2, 1) {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i++ {
				if d, err := c.Store.Fetch(ctx, refs[i%len(refs)]); err == nil {
					getB.Add(int64(len(d)))
				}
			}
		})
		wg.Go(func() {
			for ctx.Err() == nil {
				d := chunkData(base, int(seq.Add(1))+1<<30)
				if _, err := c.Store.Put(ctx, d); err == nil {
					putB.Add(int64(len(d)))
				}
			}
		})
	}
	start := time.Now()
	victim := len(c.Nodes) - 1
	killed, replaced := false, false
	healDone := make(chan float64, 1)
	getS := report.Series{Name: "GET 4 MiB", Unit: "MB/s"}
	putS := report.Series{Name: "PUT 4 MiB", Unit: "MB/s"}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastG, lastP int64
	lastT := 0.0
	var herr error
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		case t := <-healDone:
			w.Events = append(w.Events, report.Event{T: t, Label: "rebuild done"})
			continue
		}
		t := time.Since(start).Seconds()
		g, p := getB.Load(), putB.Load()
		if dt := t - lastT; dt > 0 {
			getS.Points = append(getS.Points, report.Point{T: t, V: float64(g-lastG) / dt / 1e6})
			putS.Points = append(putS.Points, report.Point{T: t, V: float64(p-lastP) / dt / 1e6})
		}
		lastG, lastP, lastT = g, p, t
		if !killed && t >= cfg.Duration.Seconds()/4 {
			killed = true
			c.Stop(victim)
			w.Events = append(w.Events, report.Event{T: t, Label: "node killed"})
		}
		if !replaced && t >= cfg.Duration.Seconds()/2 {
			replaced = true
			if err := c.Replace(victim); err != nil {
				herr = err
				break
			}
			w.Events = append(w.Events, report.Event{T: t, Label: "disk replaced, rebuild"})
			wg.Go(func() {
				_, _, err := healAll(ctx, c, Config{})
				if err != nil && ctx.Err() == nil {
					herr = err
				}
				if ctx.Err() == nil {
					healDone <- time.Since(start).Seconds()
				}
			})
		}
	}
	cancel()
	wg.Wait()
	select {
	case t := <-healDone:
		w.Events = append(w.Events, report.Event{T: t, Label: "rebuild done"})
	default:
	}
	if !slices.ContainsFunc(w.Events, func(e report.Event) bool { return e.Label == "rebuild done" }) {
		w.Events = append(w.Events, report.Event{T: time.Since(start).Seconds(), Label: "load ended, rebuild unfinished"})
	}
	if herr != nil {
		return fmt.Errorf("store: kill-node: %w", herr)
	}
	w.Series = append(w.Series, getS, putS)
	w.Notes = append(w.Notes, fmt.Sprintf("--kill-node: GETs and PUTs of 4 MiB chunks for %v; node %d stopped at a quarter, its disk replaced (empty) at half and healed; the rebuild competes with the load.", cfg.Duration, victim))
	return nil
}

// timed runs fn(0..n-1) on workers goroutines and returns zos's result:
// chunk bytes per second and per-op latency percentiles.
func timed(ctx context.Context, n, workers, size int, fn func(i int) error) (report.Result, error) {
	lat := make([]time.Duration, n)
	el, err := parallel(ctx, n, workers, func(i int) error {
		t0 := time.Now()
		err := fn(i)
		lat[i] = time.Since(t0)
		return err
	})
	if err != nil {
		return report.Result{}, err
	}
	mbps := float64(n) * float64(size) / el / 1e6
	return report.Result{Target: report.Zos, Value: mbps, MBps: mbps, OpsPerSec: float64(n) / el, Latency: Percentiles(lat)}, nil
}

// timedBatches runs fn(0..n-1) on workers goroutines, each call storing a
// batch of chunks of size bytes and returning how many; the result counts
// chunk bytes and chunks per second, with per-batch latency percentiles.
func timedBatches(ctx context.Context, n, workers int, fn func(b int) (int, error), size int) (report.Result, error) {
	lat := make([]time.Duration, n)
	var chunks atomic.Int64
	el, err := parallel(ctx, n, workers, func(i int) error {
		t0 := time.Now()
		k, err := fn(i)
		lat[i] = time.Since(t0)
		chunks.Add(int64(k))
		return err
	})
	if err != nil {
		return report.Result{}, err
	}
	ops := float64(chunks.Load()) / el
	mbps := ops * float64(size) / 1e6
	return report.Result{Target: report.Zos, Value: mbps, MBps: mbps, OpsPerSec: ops, Latency: Percentiles(lat)}, nil
}

// Percentiles returns p50, p99 and p99.9 of lat (which it sorts).
func Percentiles(lat []time.Duration) *report.Latency {
	if len(lat) == 0 {
		return nil
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		i := min(int(q*float64(len(lat))), len(lat)-1)
		return float64(lat[i]) / float64(time.Microsecond)
	}
	return &report.Latency{P50: at(0.5), P99: at(0.99), P999: at(0.999)}
}

func kib(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
