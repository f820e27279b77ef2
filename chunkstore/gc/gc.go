// Package gc collects chunks nothing refers to, by mark and sweep.
//
// Mark: every Roots (vdisk heads and snapshots, registered flists, pinned
// blobs — each consumer implements it) marks the chunks it reaches. Sweep:
// every up node lists its shards and deletes those of unmarked chunks whose
// write time is before the cutoff = mark start - Grace. The delete is
// conditional on the node (only if still written before the cutoff), so:
//
//   - a chunk written during or shortly before the collection (within Grace)
//     is never collected, even if the root referring to it is committed
//     after the mark read the roots;
//   - a writer that stores bytes already present re-puts them, which
//     refreshes the shards' write time on every node, so deduplication
//     against a chunk that is being collected is safe.
//
// Grace must exceed the longest time between writing a chunk and committing
// a root that refers to it (a vdisk flush, a hub upload). If any root fails
// to mark, nothing is swept. Nodes that are down keep their garbage until a
// later collection meets them.
//
// # Usage
//
//	c, err := gc.New(gc.Config{Store: erasureStore, Grace: time.Hour, Registry: reg})
//	res, err := c.Run(ctx, vdiskRoots, flistRoots, gc.Blobs(pinned))
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/placement"
)

// Roots marks live chunks. Mark calls mark for every chunk reachable from
// the roots it stands for, reading what it needs through f. It must see a
// consistent snapshot of its roots taken when it is called.
type Roots interface {
	Mark(ctx context.Context, f chunkstore.Fetcher, mark func(chunkstore.Ref)) error
}

// RootsFunc adapts a function to Roots.
type RootsFunc func(ctx context.Context, f chunkstore.Fetcher, mark func(chunkstore.Ref)) error

// Mark calls fn.
func (fn RootsFunc) Mark(ctx context.Context, f chunkstore.Fetcher, mark func(chunkstore.Ref)) error {
	return fn(ctx, f, mark)
}

// Refs marks exactly these chunks.
type Refs []chunkstore.Ref

// Mark marks the refs.
func (r Refs) Mark(_ context.Context, _ chunkstore.Fetcher, mark func(chunkstore.Ref)) error {
	for _, x := range r {
		mark(x)
	}
	return nil
}

// Blobs marks these blobs and every chunk in them (manifests and data,
// through blob.Refs).
type Blobs []chunkstore.Ref

// Mark walks each blob.
func (b Blobs) Mark(ctx context.Context, f chunkstore.Fetcher, mark func(chunkstore.Ref)) error {
	for _, ref := range b {
		if err := blob.Refs(ctx, f, ref, func(r chunkstore.Ref) error { mark(r); return nil }); err != nil {
			return fmt.Errorf("blob %s: %w", ref.Short(), err)
		}
	}
	return nil
}

// Config configures a collection.
type Config struct {
	// Store is the cluster store (fetcher for marking, map and dialer for
	// sweeping). Required.
	Store *erasure.Store
	// Grace spares chunks written less than this before the mark started.
	// Default 1h.
	Grace time.Duration
	// DryRun counts what would be deleted without deleting.
	DryRun bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (component "gc"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives counters of collected shards and bytes.
	Registry *prometheus.Registry
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("gc: bad config")

// Result reports a collection.
type Result struct {
	MarkStart time.Time `json:"markStart"`
	Cutoff    time.Time `json:"cutoff"`
	Finished  time.Time `json:"finished"`
	Marked    int64     `json:"marked"` // distinct chunks marked live
	Nodes     int       `json:"nodes"`  // nodes swept
	// Skipped lists up nodes that could not be swept (and why).
	Skipped []string `json:"skipped,omitempty"`
	Scanned int64    `json:"scanned"` // shards listed
	Chunks  int64    `json:"chunks"`  // distinct chunks with shards deleted
	Shards  int64    `json:"shards"`  // shards deleted
	Bytes   int64    `json:"bytes"`   // shard bytes freed
	Spared  int64    `json:"spared"`  // unmarked shards spared by the grace period
	DryRun  bool     `json:"dryRun,omitempty"`
}

// Collector runs collections, one at a time, and exports their counters.
type Collector struct {
	cfg Config
	m   *metrics

	run  sync.Mutex
	mu   sync.Mutex
	last Result
}

// New returns a Collector.
func New(cfg Config) (*Collector, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if cfg.Grace < 0 {
		return nil, fmt.Errorf("%w: negative Grace", ErrConfig)
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg, m: newMetrics(cfg.Registry)}, nil
}

// Close unregisters the metrics.
func (c *Collector) Close() error {
	c.m.unregister()
	return nil
}

// Last returns the result of the last collection.
func (c *Collector) Last() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Collect is New(cfg) then Run(ctx, roots...), for one-off use.
func Collect(ctx context.Context, cfg Config, roots ...Roots) (Result, error) {
	c, err := New(cfg)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	return c.Run(ctx, roots...)
}

// Run marks from roots and sweeps every up node. Concurrent calls run one
// after the other.
func (c *Collector) Run(ctx context.Context, roots ...Roots) (Result, error) {
	c.run.Lock()
	defer c.run.Unlock()
	res, err := c.collect(ctx, roots)
	c.mu.Lock()
	c.last = res
	c.mu.Unlock()
	if err == nil && !res.DryRun {
		c.m.runs.Inc()
		c.m.chunks.Add(float64(res.Chunks))
		c.m.shards.Add(float64(res.Shards))
		c.m.bytes.Add(float64(res.Bytes))
	}
	return res, err
}

func (c *Collector) collect(ctx context.Context, roots []Roots) (Result, error) {
	cfg := c.cfg
	log := cfg.Logger.With("component", "gc")
	res := Result{MarkStart: cfg.Now(), DryRun: cfg.DryRun}
	res.Cutoff = res.MarkStart.Add(-cfg.Grace)
	// The map is read before marking: a node that joins later got its
	// shards from writes or moves after the mark started.
	m := cfg.Store.Map()

	var mu sync.Mutex
	marked := map[chunkstore.Ref]struct{}{}
	mark := func(r chunkstore.Ref) {
		mu.Lock()
		marked[r] = struct{}{}
		mu.Unlock()
	}
	for i, r := range roots {
		if err := r.Mark(ctx, cfg.Store, mark); err != nil {
			return res, fmt.Errorf("gc: roots #%d failed to mark; nothing swept: %w", i, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Marked = int64(len(marked))
	log.Info("marked", "chunks", res.Marked, "cutoff", res.Cutoff)

	cutoff := res.Cutoff.UnixNano()
	deletedRefs := map[chunkstore.Ref]struct{}{}
	var wg sync.WaitGroup
	var errs []error
	for _, n := range m.Nodes {
		if n.State != placement.Up {
			continue
		}
		wg.Go(func() {
			st := sweepNode(ctx, cfg, n, marked, cutoff, func(r chunkstore.Ref) {
				mu.Lock()
				deletedRefs[r] = struct{}{}
				mu.Unlock()
			})
			mu.Lock()
			defer mu.Unlock()
			res.Scanned += st.scanned
			res.Shards += st.shards
			res.Bytes += st.bytes
			res.Spared += st.spared
			if st.err != nil {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", n.ID, st.err))
				errs = append(errs, fmt.Errorf("node %s: %w", n.ID, st.err))
				return
			}
			res.Nodes++
		})
	}
	wg.Wait()
	sort.Strings(res.Skipped)
	res.Chunks = int64(len(deletedRefs))
	res.Finished = cfg.Now()
	log.Info("swept", "nodes", res.Nodes, "skipped", len(res.Skipped), "chunks", res.Chunks, "shards", res.Shards, "bytes", res.Bytes, "spared", res.Spared, "dry_run", cfg.DryRun)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("%w: gc could not sweep every node: %w", chunkstore.ErrUnavailable, errors.Join(errs...))
	}
	return res, nil
}

type metrics struct {
	reg                         *prometheus.Registry
	runs, chunks, shards, bytes prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		reg:    reg,
		runs:   c("zos_gc_runs_total", "Completed garbage collections."),
		chunks: c("zos_gc_collected_chunks_total", "Chunks whose shards garbage collection deleted."),
		shards: c("zos_gc_collected_shards_total", "Shards garbage collection deleted."),
		bytes:  c("zos_gc_freed_bytes_total", "Shard bytes garbage collection freed."),
	}
	if reg != nil {
		for _, x := range []prometheus.Collector{m.runs, m.chunks, m.shards, m.bytes} {
			reg.MustRegister(x)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, x := range []prometheus.Collector{m.runs, m.chunks, m.shards, m.bytes} {
		m.reg.Unregister(x)
	}
}

type sweepStats struct {
	scanned, shards, bytes, spared int64
	err                            error
}

// sweepNode deletes the node's shards of unmarked chunks written before
// cutoff.
func sweepNode(ctx context.Context, cfg Config, n placement.Node, marked map[chunkstore.Ref]struct{}, cutoff int64, deleted func(chunkstore.Ref)) (st sweepStats) {
	store, err := cfg.Store.Dial(n)
	if err != nil {
		st.err = err
		return st
	}
	var batch []chunkstore.ShardInfo
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		keys := make([]chunkstore.ShardKey, len(batch))
		for i, si := range batch {
			keys[i] = si.Key
		}
		if cfg.DryRun {
			for _, si := range batch {
				st.shards++
				st.bytes += int64(si.Size)
				deleted(si.Key.Ref)
			}
			batch = batch[:0]
			return nil
		}
		got, err := store.DeleteShards(ctx, keys, cutoff)
		if err != nil {
			return err
		}
		// Shards re-put meanwhile were spared by the node: find which.
		survivors := map[chunkstore.ShardKey]bool{}
		if got < len(keys) {
			res, err := store.StatShards(ctx, keys)
			if err != nil {
				return err
			}
			for i, r := range res {
				if r.Err == nil {
					survivors[keys[i]] = true
				}
			}
		}
		for _, si := range batch {
			if survivors[si.Key] {
				st.spared++
				continue
			}
			st.shards++
			st.bytes += int64(si.Size)
			deleted(si.Key.Ref)
		}
		batch = batch[:0]
		return nil
	}
	err = chunkstore.WalkShards(ctx, store, chunkstore.ShardKey{}, 4096, func(si chunkstore.ShardInfo) error {
		st.scanned++
		if _, ok := marked[si.Key.Ref]; ok {
			return nil
		}
		if si.Written >= cutoff {
			st.spared++
			return nil
		}
		batch = append(batch, si)
		if len(batch) >= 1024 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	st.err = err
	return st
}
