// Package scrub finds and repairs bitrot. A Scrubber walks every shard of
// its node's local store, reading each one (the store verifies its record
// and data checksums and quarantines a shard that fails), and has every
// corrupt shard rebuilt from the chunk's other shards through the cluster
// store (which verifies the rebuilt chunk against its Ref before writing).
// It counts shards scanned, corrupt, repaired and unrepairable.
//
// Passes are rate limited (bytes read per second) and checkpointed in the
// local store, so a pass interrupted by a restart resumes where it stopped.
// Start runs passes on a schedule; Run runs one now ("zos store scrub").
//
// # Usage
//
//	s, err := scrub.New(scrub.Config{NodeID: self, Local: diskStore, Store: erasureStore, Interval: 24 * time.Hour, Registry: reg})
//	s.Start()          // background passes every Interval
//	defer s.Close()
//	res, err := s.Run(ctx) // one pass now
package scrub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"golang.org/x/time/rate"
)

// LocalStore is the node's own shard store with a place for checkpoints.
type LocalStore = chunkstore.LocalShardStore

// Config configures a Scrubber.
type Config struct {
	// NodeID is this node's ID (for logs).
	NodeID string
	// Local is the store to scrub. Required.
	Local LocalStore
	// Store repairs corrupt shards from redundancy. Required for repair;
	// without it corrupt shards are only reported (and quarantined).
	Store *erasure.Store
	// Interval between scheduled passes (Start). Default 24h.
	Interval time.Duration
	// RateLimit caps bytes read per second; 0 means unlimited.
	RateLimit float64
	// Batch is the number of shards read per request. Default 16.
	Batch int
	// Logger (component "scrub"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the scrubber's metrics.
	Registry *prometheus.Registry
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("scrub: bad config")

// ErrRunning: a pass is already running.
var ErrRunning = errors.New("scrub: a pass is already running")

// Result of a pass.
type Result struct {
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	Running      bool      `json:"running"`
	Resumed      bool      `json:"resumed"`
	Scanned      int64     `json:"scanned"`
	Bytes        int64     `json:"bytes"`
	Corrupt      int64     `json:"corrupt"`
	Repaired     int64     `json:"repaired"`
	Unrepairable int64     `json:"unrepairable"`
	// Errors holds the first few repair or read errors.
	Errors []string `json:"errors,omitempty"`
}

// Scrubber scrubs one node's shards.
type Scrubber struct {
	cfg     Config
	log     *slog.Logger
	limiter *rate.Limiter
	m       *metrics

	mu      sync.Mutex
	running bool
	cur     Result
	last    Result

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// New returns a Scrubber.
func New(cfg Config) (*Scrubber, error) {
	if cfg.Local == nil {
		return nil, fmt.Errorf("%w: Local is required", ErrConfig)
	}
	if cfg.RateLimit < 0 {
		return nil, fmt.Errorf("%w: negative RateLimit", ErrConfig)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 24 * time.Hour
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Scrubber{cfg: cfg, log: cfg.Logger.With("component", "scrub", "node", cfg.NodeID), stop: make(chan struct{})}
	s.limiter = rate.NewLimiter(rate.Inf, 0)
	if cfg.RateLimit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(int(cfg.RateLimit), 16<<20))
	}
	s.m = newMetrics(cfg.Registry)
	return s, nil
}

// Start runs a pass every Interval in the background until Close.
func (s *Scrubber) Start() {
	s.wg.Go(func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-s.stop
			cancel()
		}()
		t := time.NewTicker(s.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := s.Run(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, ErrRunning) {
					s.log.Warn("scheduled scrub failed", "err", err)
				}
			}
		}
	})
}

// Close stops scheduled passes and waits for a running one to stop.
func (s *Scrubber) Close() error {
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.m.unregister()
	})
	return nil
}

// Progress returns the running pass's counters, or the last pass's.
func (s *Scrubber) Progress() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		r := s.cur
		r.Errors = append([]string(nil), r.Errors...)
		return r
	}
	return s.last
}

const checkpointKey = "scrub/checkpoint"

// Run scrubs every local shard once (resuming an interrupted pass).
func (s *Scrubber) Run(ctx context.Context) (Result, error) {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return Result{}, ErrRunning
	}
	s.running = true
	s.cur = Result{Started: time.Now(), Running: true}
	s.mu.Unlock()
	res, err := s.run(ctx)
	s.mu.Lock()
	s.running = false
	res.Running = false
	res.Finished = time.Now()
	s.last = res
	s.mu.Unlock()
	return res, err
}

func (s *Scrubber) run(ctx context.Context) (Result, error) {
	var after chunkstore.ShardKey
	if b, err := s.cfg.Local.GetMeta(checkpointKey); err == nil {
		if json.Unmarshal(b, &after) == nil {
			s.update(func(r *Result) { r.Resumed = true })
		}
	}
	var batch []chunkstore.ShardInfo
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.scrubBatch(ctx, batch); err != nil {
			return err
		}
		cp, _ := json.Marshal(batch[len(batch)-1].Key)
		batch = batch[:0]
		return s.cfg.Local.SetMeta(checkpointKey, cp)
	}
	err := chunkstore.WalkShards(ctx, s.cfg.Local, after, 1024, func(si chunkstore.ShardInfo) error {
		batch = append(batch, si)
		if len(batch) >= s.cfg.Batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	r := s.Progress()
	if err != nil {
		s.log.Warn("scrub pass stopped; it resumes from its checkpoint", "err", err, "scanned", r.Scanned)
		return r, err
	}
	_ = s.cfg.Local.DeleteMeta(checkpointKey)
	s.log.Info("scrub pass done", "scanned", r.Scanned, "corrupt", r.Corrupt, "repaired", r.Repaired, "unrepairable", r.Unrepairable)
	return r, nil
}

func (s *Scrubber) update(fn func(r *Result)) {
	s.mu.Lock()
	fn(&s.cur)
	s.mu.Unlock()
}

func (s *Scrubber) note(err error) {
	s.update(func(r *Result) {
		if len(r.Errors) < 20 {
			r.Errors = append(r.Errors, err.Error())
		}
	})
}

func (s *Scrubber) scrubBatch(ctx context.Context, batch []chunkstore.ShardInfo) error {
	var bytes int64
	keys := make([]chunkstore.ShardKey, len(batch))
	for i, si := range batch {
		keys[i] = si.Key
		bytes += int64(si.Size)
	}
	if s.limiter.Limit() != rate.Inf {
		if err := s.limiter.WaitN(ctx, int(min(bytes, int64(s.limiter.Burst())))); err != nil {
			return err
		}
	}
	res, err := s.cfg.Local.GetShards(ctx, keys)
	if err != nil {
		return err
	}
	chunkstore.ReleaseResults(res) // read and verified: only the verdicts matter
	s.update(func(r *Result) {
		r.Scanned += int64(len(batch))
		r.Bytes += bytes
	})
	s.m.scanned.Add(float64(len(batch)))
	s.m.bytes.Add(float64(bytes))
	for i, x := range res {
		if x.Err == nil || errors.Is(x.Err, chunkstore.ErrNotFound) {
			continue // fine, or deleted meanwhile
		}
		if !chunkstore.IsCorruption(x.Err) {
			s.note(fmt.Errorf("read %s: %w", keys[i], x.Err))
			continue
		}
		s.update(func(r *Result) { r.Corrupt++ })
		s.m.corrupt.Inc()
		s.log.Warn("corrupt shard", "shard", keys[i].String(), "err", x.Err)
		if err := s.repair(ctx, keys[i]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.update(func(r *Result) { r.Unrepairable++ })
			s.m.unrepairable.Inc()
			s.note(fmt.Errorf("repair %s: %w", keys[i], err))
			continue
		}
		s.update(func(r *Result) { r.Repaired++ })
		s.m.repaired.Inc()
	}
	return nil
}

// repair rebuilds a corrupt shard (already dropped from the local index)
// at its current home and checks that the home has it.
func (s *Scrubber) repair(ctx context.Context, k chunkstore.ShardKey) error {
	if s.cfg.Store == nil {
		return fmt.Errorf("%w: no cluster store to repair from", chunkstore.ErrUnavailable)
	}
	res, err := s.cfg.Store.Repair(ctx, k.Ref, k.Profile)
	if err != nil {
		return err
	}
	for _, i := range res.Missing {
		if i == int(k.Index) {
			for _, w := range res.Written {
				if w == i {
					return nil
				}
			}
			return fmt.Errorf("%w: shard %d was not rewritten", chunkstore.ErrUnavailable, i)
		}
	}
	// Not missing at its home: this copy was an old (misplaced) one, and
	// the home has a good shard.
	return nil
}

type metrics struct {
	reg          *prometheus.Registry
	collectors   []prometheus.Collector
	scanned      prometheus.Counter
	bytes        prometheus.Counter
	corrupt      prometheus.Counter
	repaired     prometheus.Counter
	unrepairable prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		reg:          reg,
		scanned:      c("zos_scrub_scanned_shards_total", "Shards read and verified by the scrubber."),
		bytes:        c("zos_scrub_scanned_bytes_total", "Shard bytes read by the scrubber."),
		corrupt:      c("zos_scrub_corrupt_shards_total", "Shards the scrubber found corrupt."),
		repaired:     c("zos_scrub_repaired_shards_total", "Corrupt shards rebuilt from redundancy."),
		unrepairable: c("zos_scrub_unrepairable_shards_total", "Corrupt shards that could not be rebuilt."),
	}
	m.collectors = []prometheus.Collector{m.scanned, m.bytes, m.corrupt, m.repaired, m.unrepairable}
	if reg != nil {
		for _, x := range m.collectors {
			reg.MustRegister(x)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, x := range m.collectors {
		m.reg.Unregister(x)
	}
}
