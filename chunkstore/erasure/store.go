package erasure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/remote"
	"github.com/zosproject/zos/internal/slogx"
	"golang.org/x/time/rate"
)

// Dialer returns the shard store of a node (a remote client, or the local
// disk store for the node itself).
type Dialer interface {
	Dial(node placement.Node) (chunkstore.ShardStore, error)
}

// DialFunc adapts a function to Dialer.
type DialFunc func(node placement.Node) (chunkstore.ShardStore, error)

// Dial calls f.
func (f DialFunc) Dial(node placement.Node) (chunkstore.ShardStore, error) { return f(node) }

// PoolDialer dials nodes through a remote.Pool by their Addr; nodes whose
// ID is in local are served by that store directly (no TCP to oneself).
func PoolDialer(pool *remote.Pool, local map[string]chunkstore.ShardStore) Dialer {
	return DialFunc(func(n placement.Node) (chunkstore.ShardStore, error) {
		if s := local[n.ID]; s != nil {
			return s, nil
		}
		if n.Addr == "" {
			return nil, fmt.Errorf("%w: node %s has no shard server address", chunkstore.ErrUnavailable, n.ID)
		}
		return pool.Get(n.Addr)
	})
}

// DefaultReplicateBelow is the chunk size under which chunks are stored as
// 1+m replicas instead of k+m shards (see doc.go for the benchmark).
const DefaultReplicateBelow = 4 << 10

// Config configures a Store.
type Config struct {
	// Map is the cluster map to place shards over. Update with SetMap.
	Map placement.Map
	// Dialer reaches each node's shard store. Required.
	Dialer Dialer
	// Profile is the profile new chunks are written with. Default
	// chunkstore.DefaultProfile(number of up nodes).
	Profile chunkstore.Profile
	// ReplicateBelow: chunks shorter than this are stored as 1+m
	// replicas. Default DefaultReplicateBelow; negative disables.
	ReplicateBelow int
	// History is how many previous maps a read consults when a shard is
	// missing at its current home. Default 4.
	History int
	// Local is the ID of the node whose shard store the Dialer returns in
	// this process (no network hop, no TLS). Reads prefer its shards: a
	// chunk whose parity shard it holds, and not a data shard, is read
	// from it and one data shard fewer, the missing data shard rebuilt
	// (doc.go, "Reads"). Empty: data shards only.
	Local string
	// RepairWorkers run read repair in the background. Default 2.
	RepairWorkers int
	// RepairQueue bounds queued read repairs (more are dropped; heal and
	// scrub catch them later). Default 64.
	RepairQueue int
	// PendingLimit bounds the pending repairs: chunks acknowledged with
	// shards missing, remembered (ref, profile, size, missing positions
	// and their nodes; about 200 bytes each, not the data) until those
	// nodes answer again. Past it a chunk is not remembered; HealNeeded is
	// called once its nodes answer. Default 65536.
	PendingLimit int
	// PendingInterval is how often the nodes pending repairs wait for are
	// probed. Default 2s.
	PendingInterval time.Duration
	// PendingWorkers rebuild pending chunks in parallel. Default 4.
	PendingWorkers int
	// PendingRate caps the shard bytes per second pending repairs read
	// and write (heal's rate, so a node's return does not swamp the
	// cluster); 0 means unlimited.
	PendingRate float64
	// HealNeeded, if set, is called (from the store's own goroutine; it
	// must not block) when a node answers again for which degraded chunks
	// were not remembered: the caller should run heal passes, which find
	// every shard missing at its home.
	HealNeeded func(node string)
	// Logger (component "erasure"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the store's metrics.
	Registry *prometheus.Registry
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("erasure: bad config")

func (c *Config) setDefaults() {
	if c.Profile.IsZero() {
		c.Profile = chunkstore.DefaultProfile(len(c.Map.Up()))
	}
	if c.ReplicateBelow == 0 {
		c.ReplicateBelow = DefaultReplicateBelow
	}
	if c.History == 0 {
		c.History = 4
	}
	if c.RepairWorkers == 0 {
		c.RepairWorkers = 2
	}
	if c.RepairQueue == 0 {
		c.RepairQueue = 64
	}
	if c.PendingLimit == 0 {
		c.PendingLimit = 1 << 16
	}
	if c.PendingInterval == 0 {
		c.PendingInterval = 2 * time.Second
	}
	if c.PendingWorkers == 0 {
		c.PendingWorkers = 4
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c.setDefaults()
	if c.Dialer == nil {
		return fmt.Errorf("%w: Dialer is required", ErrConfig)
	}
	if err := c.Profile.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.PendingLimit < 0 || c.PendingInterval < 0 || c.PendingWorkers < 0 || c.PendingRate < 0 || c.RepairQueue < 0 || c.RepairWorkers < 0 {
		return fmt.Errorf("%w: negative PendingLimit, PendingInterval, PendingWorkers, PendingRate, RepairQueue or RepairWorkers", ErrConfig)
	}
	if err := c.Map.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}

// Store is the cluster chunk store. It is safe for concurrent use.
type Store struct {
	cfg   Config
	log   *slog.Logger
	codec *Codec
	m     *metrics

	mu      sync.RWMutex
	placers []*placement.Placer // [0] is current, then older maps
	profile chunkstore.Profile

	repairs     chan repairJob
	pending     *pendingList
	pendingRate *rate.Limiter
	degradedLog slogx.Rare
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	once        sync.Once
}

// New returns a Store over cfg.Map.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	p, err := placement.New(cfg.Map)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "erasure"),
		codec:       NewCodec(),
		placers:     []*placement.Placer{p},
		profile:     cfg.Profile,
		repairs:     make(chan repairJob, cfg.RepairQueue),
		pending:     newPendingList(cfg.PendingLimit),
		pendingRate: rate.NewLimiter(rate.Inf, 0),
		ctx:         ctx,
		cancel:      cancel,
	}
	if cfg.PendingRate > 0 {
		s.pendingRate = rate.NewLimiter(rate.Limit(cfg.PendingRate), max(int(cfg.PendingRate), 16<<20))
	}
	s.degradedLog.Every = time.Minute
	s.m = newMetrics(cfg.Registry, func() float64 { return float64(s.pending.len()) })
	for range cfg.RepairWorkers {
		s.wg.Go(s.repairLoop)
	}
	s.wg.Go(s.pendingLoop)
	return s, nil
}

// Close stops background repair (read repairs and pending repairs) and
// waits for it; pending repairs not done yet are forgotten (heal passes
// find them). The dialer's clients are the caller's to close.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.m.unregister()
	})
	return nil
}

// SetMap installs a new cluster map. The previous maps are kept (up to
// Config.History) so reads can find shards at their old homes until the
// rebalancer has moved them.
func (s *Store) SetMap(m placement.Map) error {
	p, err := placement.New(m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.placers[0].Map().Epoch == m.Epoch {
		s.placers[0] = p
		return nil
	}
	s.placers = append([]*placement.Placer{p}, s.placers...)
	if len(s.placers) > 1+s.cfg.History {
		s.placers = s.placers[:1+s.cfg.History]
	}
	return nil
}

// Map returns the current cluster map.
func (s *Store) Map() placement.Map { return s.Placer().Map() }

// Placer returns the current placement.
func (s *Store) Placer() *placement.Placer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.placers[0]
}

// History returns the placements of the previous maps, newest first.
func (s *Store) History() []*placement.Placer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*placement.Placer(nil), s.placers[1:]...)
}

func (s *Store) allPlacers() []*placement.Placer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*placement.Placer(nil), s.placers...)
}

// Profile returns the profile new chunks are written with.
func (s *Store) Profile() chunkstore.Profile {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.profile
}

// SetProfile changes the profile of new writes. Existing chunks keep theirs
// (reads discover it from the shards).
func (s *Store) SetProfile(p chunkstore.Profile) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.profile = p
	s.mu.Unlock()
	return nil
}

// Codec returns the store's codec.
func (s *Store) Codec() *Codec { return s.codec }

// Dial returns a node's shard store.
func (s *Store) Dial(n placement.Node) (chunkstore.ShardStore, error) { return s.cfg.Dialer.Dial(n) }

// ProfileFor returns the profile a chunk of size bytes is written with.
func (s *Store) ProfileFor(size int) chunkstore.Profile {
	return s.profileFor(s.Profile(), size)
}

func (s *Store) profileFor(p chunkstore.Profile, size int) chunkstore.Profile {
	if p.M > 0 && p.K > 1 && size < s.cfg.ReplicateBelow {
		return chunkstore.Profile{K: 1, M: p.M}
	}
	return p
}

// nodeReq is the work for one node: keys and the positions they stand for.
type nodeReq struct {
	node      placement.Node
	positions []int
	keys      []chunkstore.ShardKey
	shards    []chunkstore.Shard
}

func groupByNode(homes []placement.Node, positions []int, key func(i int) chunkstore.ShardKey) []*nodeReq {
	var out []*nodeReq
	idx := map[string]*nodeReq{}
	for _, i := range positions {
		n := homes[i]
		r := idx[n.ID]
		if r == nil {
			r = &nodeReq{node: n}
			idx[n.ID] = r
			out = append(out, r)
		}
		r.positions = append(r.positions, i)
		if key != nil {
			r.keys = append(r.keys, key(i))
		}
	}
	return out
}

// Put stores data as a chunk: encoded into the shards of its profile, each
// written to its home in parallel. It succeeds when the write quorum is
// durable (WriteQuorum: k+1, or k when fewer than k+1 homes answered; all
// for k+0); missing shards are remembered as pending repairs and rebuilt
// when their nodes answer. Fewer than k live homes is
// chunkstore.ErrUnavailable naming the unreachable nodes (shards already
// written are left for garbage collection). If the cluster has fewer
// failure domains than the profile has shards, the chunk is written with
// the profile Fit gives (e.g. 2+2 instead of 4+2 on four nodes).
func (s *Store) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	return s.put(ctx, data, s.Profile())
}

// WithProfile returns a view of the store that writes new chunks with
// profile p (a pool's profile; {K: n, M: 0} for non-redundant cache data).
// Reads, stats, enumeration and removal are the store's own: a chunk is
// found whatever profile it was written with.
func (s *Store) WithProfile(p chunkstore.Profile) (chunkstore.Store, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return profileView{Store: s, p: p}, nil
}

type profileView struct {
	*Store
	p chunkstore.Profile
}

func (v profileView) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	return v.Store.put(ctx, data, v.p)
}

func (s *Store) put(ctx context.Context, data []byte, base chunkstore.Profile) (chunkstore.Ref, error) {
	if len(data) > chunkstore.MaxChunkSize {
		return chunkstore.Ref{}, fmt.Errorf("%w: %d bytes", chunkstore.ErrTooLarge, len(data))
	}
	if err := ctx.Err(); err != nil {
		return chunkstore.Ref{}, err
	}
	p := s.profileFor(base, len(data))
	ref, shards, release, err := s.hashAndEncode(p, data, chunkstore.Ref{})
	if err != nil {
		return ref, err
	}
	// Fewer failure domains than shards: write the profile heal would
	// re-encode the chunk to (see Fit), not one it would have to.
	if t, need := Fit(s.Placer(), ref, p); need {
		release()
		p = t
		if shards, release, err = s.codec.EncodeShared(p, data); err != nil {
			return ref, err
		}
	}
	// Every write has returned when writeShards does (shard stores never
	// read the data after their PutShards returns), so the buffers are
	// free again after it.
	o := s.writeShards(ctx, ref, p, len(data), shards, nil)
	defer release()
	s.m.puts.Inc()
	s.m.putBytes.Add(float64(len(data)))
	if err := ctx.Err(); err != nil {
		return ref, err
	}
	return ref, s.settle(ref, p, len(data), o)
}

// parallelBelow: chunks at least this large are hashed and encoded in
// parallel (two cores halve a put's CPU latency; tiny chunks are not worth
// a goroutine).
const parallelBelow = 256 << 10

// hashAndEncode computes the chunk's Ref (unless the caller named it:
// name is not zero) and its shards under p, in parallel for large chunks.
func (s *Store) hashAndEncode(p chunkstore.Profile, data []byte, name chunkstore.Ref) (chunkstore.Ref, [][]byte, func(), error) {
	if !name.IsZero() {
		shards, release, err := s.codec.EncodeShared(p, data)
		return name, shards, release, err
	}
	if len(data) < parallelBelow || p.M == 0 {
		ref := chunkstore.Sum(data)
		shards, release, err := s.codec.EncodeShared(p, data)
		return ref, shards, release, err
	}
	var ref chunkstore.Ref
	done := make(chan struct{})
	go func() {
		ref = chunkstore.Sum(data)
		close(done)
	}()
	shards, release, err := s.codec.EncodeShared(p, data)
	<-done
	return ref, shards, release, err
}

// writeShards writes the given positions (all if nil) of ref's shards to
// their current homes and reports what became of each.
func (s *Store) writeShards(ctx context.Context, ref chunkstore.Ref, p chunkstore.Profile, chunkSize int, shards [][]byte, positions []int) writeOutcome {
	o := writeOutcome{homes: s.Placer().Place(ref, p.N()), fates: make([]fate, p.N())}
	if o.homes == nil {
		o.errs = []error{fmt.Errorf("%w: no storage node is up", chunkstore.ErrUnavailable)}
		return o
	}
	if positions == nil {
		positions = seq(p.N())
	}
	reqs := groupByNode(o.homes, positions, nil)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() {
			// Checksums here: each node's are computed while others send.
			for _, i := range r.positions {
				key := chunkstore.ShardKey{Ref: ref, Profile: p, Index: uint8(i)}
				r.shards = append(r.shards, chunkstore.NewShard(key, chunkSize, shards[i]))
			}
			err := s.putNode(ctx, r.node, r.shards)
			mu.Lock()
			defer mu.Unlock()
			for _, i := range r.positions {
				o.fates[i] = fateOf(err)
			}
			if err != nil {
				o.errs = append(o.errs, fmt.Errorf("node %s: %w", r.node.ID, err))
			}
		})
	}
	wg.Wait()
	return o
}

func (s *Store) putNode(ctx context.Context, n placement.Node, shards []chunkstore.Shard) error {
	st, err := s.cfg.Dialer.Dial(n)
	if err != nil {
		return err
	}
	return st.PutShards(ctx, shards)
}

// Fetch reads a chunk: the data shards from their homes when they are all
// healthy (no decode), else any k shards, from the current homes, then
// previous homes, then wherever the cluster has them. The chunk is verified
// against ref; remote shards are not checksummed a second time on arrival
// (their server verified them), only when that check fails, and then the
// damaged ones are replaced by others. Shards found missing or corrupt at
// home are repaired in the background.
func (s *Store) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.m.fetches.Inc()
	g := s.newGathering(ref, true)
	g.unverified = true
	defer g.release()
	q, err := g.run(ctx)
	if err != nil {
		s.m.fetchErrors.Inc()
		return nil, err
	}
	data, degraded, err := g.decode(q)
	if err != nil && chunkstore.IsCorruption(err) && g.dropCorrupt(q) {
		// A shard was damaged after its server verified it: gather
		// others in its place.
		if q, err = g.run(ctx); err == nil {
			data, degraded, err = g.decode(q)
		}
	}
	if err != nil {
		s.m.fetchErrors.Inc()
		return nil, err
	}
	if degraded {
		s.m.degraded.Inc()
	}
	// Read repair, unless the chunk is due to be re-encoded (heal writes
	// its new profile; rebuilding the old one would be wasted).
	if miss := g.missingAtHome(q); len(miss) > 0 && !s.Undersized(ref, q) {
		s.queueRepair(repairJob{ref: ref, profile: q, chunkSize: len(data), data: data, positions: miss})
	}
	s.m.fetchBytes.Add(float64(len(data)))
	return data, nil
}

// Stat reports a chunk's size if enough of its shards exist to read it.
func (s *Store) Stat(ctx context.Context, ref chunkstore.Ref) (chunkstore.Info, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.Info{}, err
	}
	g := s.newGathering(ref, false)
	q, err := g.run(ctx)
	if err != nil {
		return chunkstore.Info{}, err
	}
	return chunkstore.Info{Ref: ref, Size: int64(g.chunkSize(q))}, nil
}

// Remove deletes every shard of the refs on every up node. Nodes that are
// down keep theirs until garbage collection meets them.
func (s *Store) Remove(ctx context.Context, refs ...chunkstore.Ref) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(refs) == 0 {
		return nil
	}
	keys := make([]chunkstore.ShardKey, len(refs))
	for i, r := range refs {
		keys[i] = chunkstore.ShardKey{Ref: r, Index: chunkstore.AnyIndex}
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, n := range s.Map().Up() {
		wg.Go(func() {
			st, err := s.cfg.Dialer.Dial(n)
			if err == nil {
				_, err = st.DeleteShards(ctx, keys, 0)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %s: %w", n.ID, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

var _ chunkstore.Store = (*Store)(nil)
