package heal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/placement"
	"golang.org/x/time/rate"
)

// LocalStore is the node's own shard store with a place for checkpoints.
type LocalStore = chunkstore.LocalShardStore

// Config configures a Healer.
type Config struct {
	// NodeID is this node's ID in the cluster map. Required.
	NodeID string
	// Local is this node's shard store. Required.
	Local LocalStore
	// Store is the cluster store (map, dialer, repair). Required.
	Store *erasure.Store
	// RateLimit caps shard bytes read and written per second for rebuilds
	// and moves; 0 means unlimited.
	RateLimit float64
	// Workers is the number of chunks healed in parallel. Default 8.
	Workers int
	// BatchSize is the number of chunks per batch (stat round and
	// checkpoint). Default 256.
	BatchSize int
	// Logger (component "heal"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the healer's metrics.
	Registry *prometheus.Registry
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("heal: bad config")

// ErrRunning: a pass is already running on this Healer.
var ErrRunning = errors.New("heal: a pass is already running")

// Progress of the current (or last) pass.
type Progress struct {
	Running      bool      `json:"running"`
	Epoch        uint64    `json:"epoch"`
	Resumed      bool      `json:"resumed"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	ShardsTotal  int64     `json:"shardsTotal"`
	ShardsDone   int64     `json:"shardsDone"`
	BytesTotal   int64     `json:"bytesTotal"`
	BytesDone    int64     `json:"bytesDone"`
	Chunks       int64     `json:"chunks"`
	Rebuilt      int64     `json:"rebuilt"`      // shards rebuilt and written by this node
	RebuiltBytes int64     `json:"rebuiltBytes"` // their bytes
	Moved        int64     `json:"moved"`        // local shards pushed to their new home
	MovedBytes   int64     `json:"movedBytes"`
	Dropped      int64     `json:"dropped"` // old local copies deleted
	// Kept counts old local copies whose new home has them, kept because
	// another shard of the chunk is not at its home yet (deleted by a
	// later pass, once the chunk is complete at its homes).
	Kept int64 `json:"kept"`
	// Reprofiled counts chunks this node re-encoded to a profile that fits
	// the shrunken cluster; ReprofiledBytes the new shards' bytes written.
	Reprofiled      int64 `json:"reprofiled"`
	ReprofiledBytes int64 `json:"reprofiledBytes"`
	// ReducedParity counts re-encoded chunks whose parity count had to
	// drop (no more failure domains than parity shards: 4+2 on 2 nodes
	// becomes 1+1).
	ReducedParity int64 `json:"reducedParity"`
	// Superseded counts shards of a chunk's old profile deleted, on any
	// node, once its new profile was complete.
	Superseded int64 `json:"superseded"`
	// Unfit counts chunks (led by this node) that tolerate fewer failures
	// than their parity count and that no re-encoding can improve: the
	// cluster has a single failure domain, or e.g. 2+2 over two racks.
	Unfit     int64         `json:"unfit"`
	Failed    int64         `json:"failed"` // chunks that could not be healed this pass
	Rate      float64       `json:"rate"`   // bytes examined per second
	ETA       time.Duration `json:"eta"`
	LastError string        `json:"lastError,omitempty"`
}

// Healer heals one node's shards. Its methods are safe for concurrent use;
// one pass runs at a time.
type Healer struct {
	cfg     Config
	log     *slog.Logger
	limiter *rate.Limiter
	m       *metrics

	mu      sync.Mutex
	running bool
	prog    Progress
	history []*placement.Placer // previous maps, during a pass
}

// New returns a Healer.
func New(cfg Config) (*Healer, error) {
	if cfg.NodeID == "" || cfg.Local == nil || cfg.Store == nil {
		return nil, fmt.Errorf("%w: NodeID, Local and Store are required", ErrConfig)
	}
	if cfg.RateLimit < 0 {
		return nil, fmt.Errorf("%w: negative RateLimit", ErrConfig)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Healer{cfg: cfg, log: cfg.Logger.With("component", "heal", "node", cfg.NodeID)}
	h.limiter = rate.NewLimiter(rate.Inf, 0)
	if cfg.RateLimit > 0 {
		h.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), max(int(cfg.RateLimit), 16<<20))
	}
	h.m = newMetrics(h, cfg.Registry)
	return h, nil
}

// Close unregisters the healer's metrics.
func (h *Healer) Close() error {
	h.m.unregister()
	return nil
}

// Progress returns the progress of the running or last pass.
func (h *Healer) Progress() Progress {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.prog
	end := time.Now()
	if !p.Running {
		end = p.Finished
	}
	if el := end.Sub(p.Started).Seconds(); el > 0 && !p.Started.IsZero() {
		p.Rate = float64(p.BytesDone) / el
		if p.Running && p.Rate > 0 && p.BytesTotal > p.BytesDone {
			p.ETA = time.Duration(float64(p.BytesTotal-p.BytesDone) / p.Rate * float64(time.Second))
		}
	}
	return p
}

func (h *Healer) update(fn func(p *Progress)) {
	h.mu.Lock()
	fn(&h.prog)
	h.mu.Unlock()
}

const checkpointKey = "heal/checkpoint"

type checkpoint struct {
	Epoch uint64         `json:"epoch"`
	After chunkstore.Ref `json:"after"`
}

// Run makes one pass over the local shards. It returns the pass's final
// progress; an error means the pass stopped early (it resumes from its
// checkpoint next time) — chunks that failed individually are counted in
// Failed and do not stop the pass.
func (h *Healer) Run(ctx context.Context) (Progress, error) {
	h.mu.Lock()
	if h.running {
		h.mu.Unlock()
		return Progress{}, ErrRunning
	}
	h.running = true
	h.mu.Unlock()
	err := h.run(ctx)
	h.mu.Lock()
	h.running = false
	h.prog.Running = false
	h.prog.Finished = time.Now()
	h.mu.Unlock()
	return h.Progress(), err
}

func (h *Healer) run(ctx context.Context) error {
	pl := h.cfg.Store.Placer()
	h.history = h.cfg.Store.History()
	epoch := pl.Map().Epoch
	var after chunkstore.Ref
	resumed := false
	if b, err := h.cfg.Local.GetMeta(checkpointKey); err == nil {
		var cp checkpoint
		if json.Unmarshal(b, &cp) == nil && cp.Epoch == epoch {
			after, resumed = cp.After, true
		}
	}
	var total chunkstore.ShardStoreStats
	if st, ok := h.cfg.Local.(chunkstore.ShardStatser); ok {
		total, _ = st.ShardStats(ctx)
	}
	h.update(func(p *Progress) {
		*p = Progress{Running: true, Epoch: epoch, Resumed: resumed, Started: time.Now(), ShardsTotal: total.Shards, BytesTotal: total.Bytes}
	})
	h.log.Info("heal pass starting", "epoch", epoch, "resumed", resumed, "shards", total.Shards)

	var batch []*chunk
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := h.healBatch(ctx, pl, batch); err != nil {
			return err
		}
		last := batch[len(batch)-1].ref
		cp, _ := json.Marshal(checkpoint{Epoch: epoch, After: last})
		if err := h.cfg.Local.SetMeta(checkpointKey, cp); err != nil {
			return fmt.Errorf("heal: checkpoint: %w", err)
		}
		batch = nil
		return nil
	}
	var cur *chunk
	start := chunkstore.ShardKey{Ref: after, Profile: chunkstore.Profile{K: 255, M: 255}, Index: 255}
	if !resumed {
		start = chunkstore.ShardKey{}
	}
	err := chunkstore.WalkShards(ctx, h.cfg.Local, start, 1024, func(si chunkstore.ShardInfo) error {
		if cur == nil || cur.ref != si.Key.Ref {
			if cur != nil && len(batch) >= h.cfg.BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
			cur = &chunk{ref: si.Key.Ref}
			batch = append(batch, cur)
		}
		cur.local = append(cur.local, si)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		h.update(func(p *Progress) { p.LastError = err.Error() })
		h.log.Warn("heal pass stopped; it will resume from its checkpoint", "err", err)
		return err
	}
	_ = h.cfg.Local.DeleteMeta(checkpointKey)
	p := h.Progress()
	h.log.Info("heal pass done", "chunks", p.Chunks, "rebuilt", p.Rebuilt, "moved", p.Moved, "dropped", p.Dropped, "failed", p.Failed)
	return nil
}

// chunk is one chunk with shards on this node.
type chunk struct {
	ref   chunkstore.Ref
	local []chunkstore.ShardInfo
	// per profile held locally: homes and presence at home
	groups []*group
}

type group struct {
	ref     chunkstore.Ref
	profile chunkstore.Profile
	// target is the profile the chunk must be re-encoded to (reprofile
	// set) because its shards no longer fit the cluster's failure domains.
	target    chunkstore.Profile
	reprofile bool
	homes     []placement.Node
	present   []bool // shard i is at its home (or unknown: reachable=false)
	reach     []bool // the home answered
	local     map[int]chunkstore.ShardInfo
}

// healBatch stats the homes of every chunk in the batch and heals each.
func (h *Healer) healBatch(ctx context.Context, pl *placement.Placer, batch []*chunk) error {
	type ask struct {
		g *group
		i int
	}
	perNode := map[string][]ask{}
	nodes := map[string]placement.Node{}
	for _, c := range batch {
		byProfile := map[chunkstore.Profile]*group{}
		for _, si := range c.local {
			g := byProfile[si.Key.Profile]
			if g == nil {
				p := si.Key.Profile
				g = &group{ref: c.ref, profile: p, homes: pl.Place(c.ref, p.N()), present: make([]bool, p.N()), reach: make([]bool, p.N()), local: map[int]chunkstore.ShardInfo{}}
				g.target, g.reprofile = erasure.Fit(pl, c.ref, p)
				byProfile[p] = g
				c.groups = append(c.groups, g)
			}
			g.local[int(si.Key.Index)] = si
		}
		for _, g := range c.groups {
			if g.homes == nil {
				continue
			}
			for i, home := range g.homes {
				if home.ID == h.cfg.NodeID {
					_, g.present[i] = g.local[i]
					g.reach[i] = true
					continue
				}
				perNode[home.ID] = append(perNode[home.ID], ask{g, i})
				nodes[home.ID] = home
			}
		}
	}
	// One batched stat per node.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for id, asks := range perNode {
		wg.Go(func() {
			keys := make([]chunkstore.ShardKey, len(asks))
			for j, a := range asks {
				keys[j] = chunkstore.ShardKey{Ref: a.g.ref, Profile: a.g.profile, Index: uint8(a.i)}
			}
			st, err := h.cfg.Store.Dial(nodes[id])
			var res []chunkstore.ShardResult
			if err == nil {
				res, err = st.StatShards(ctx, keys)
			}
			if err != nil || len(res) != len(keys) {
				h.log.Debug("stat failed", "node", id, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for j, a := range asks {
				a.g.reach[a.i] = true
				a.g.present[a.i] = res[j].Err == nil
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	// Heal chunks in parallel.
	sem := make(chan struct{}, h.cfg.Workers)
	for _, c := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			h.healChunk(ctx, c)
		})
	}
	wg.Wait()
	return ctx.Err()
}

func (h *Healer) healChunk(ctx context.Context, c *chunk) {
	var shards, bytes int64
	for _, si := range c.local {
		shards++
		bytes += int64(si.Size)
	}
	defer h.update(func(p *Progress) {
		p.Chunks++
		p.ShardsDone += shards
		p.BytesDone += bytes
	})
	for j, g := range c.groups {
		if j > 0 && !g.reprofile {
			// This node holds the chunk in several profiles (a re-encoding
			// raced with a move): keep one. Groups are in key order, so
			// the first is the one that supersedes the others.
			if n, err := h.cfg.Store.DropSuperseded(ctx, c.ref, g.profile); err == nil {
				h.update(func(p *Progress) { p.Superseded += int64(n) })
				h.m.superseded.Add(float64(n))
				continue
			}
		}
		if err := h.healGroup(ctx, c.ref, g); err != nil && ctx.Err() == nil {
			h.update(func(p *Progress) {
				p.Failed++
				p.LastError = err.Error()
			})
			h.m.failed.Inc()
			h.log.Warn("chunk not healed this pass", "chunk", c.ref.Short(), "profile", g.profile.String(), "err", err)
		}
	}
}

func (h *Healer) healGroup(ctx context.Context, ref chunkstore.Ref, g *group) error {
	if g.homes == nil {
		return fmt.Errorf("%w: no storage node is up", chunkstore.ErrUnavailable)
	}
	self := h.cfg.NodeID
	var errs []error
	// The rebuild leader is chosen from what the homes had before this
	// node moves anything: the home of the lowest position present at its
	// home. That node holds the shard, so its own pass meets this chunk;
	// every holder computes the same leader. With nothing at home, every
	// holder acts (rare: a whole new placement).
	leader := ""
	for i := range g.homes {
		if g.present[i] {
			leader = g.homes[i].ID
			break
		}
	}
	if g.reprofile {
		// Too few failure domains for the profile: the leader re-encodes
		// the chunk (no moves or rebuilds of the old profile).
		if leader != self && leader != "" {
			return nil
		}
		return h.reprofile(ctx, ref, g)
	}
	if g.profile.M > 0 && (leader == self || leader == "") {
		if placement.Tolerance(g.homes, int(g.profile.M)) < int(g.profile.M) {
			h.update(func(p *Progress) { p.Unfit++ })
		}
	}
	// Moves: local shards whose home is elsewhere. Push every one first,
	// then drop the old copies only once the chunk is complete at its new
	// homes: a new home may hold another of the chunk's shards (homes n1
	// n2 n3 becoming n4 n2 n1), and deleting this copy before the others
	// have moved would leave one node holding two, which one loss takes.
	var drop []int
	for i, si := range g.local {
		home := g.homes[i]
		if home.ID == self {
			continue
		}
		if !g.reach[i] {
			continue // cannot tell; keep our copy
		}
		if !g.present[i] {
			if err := h.push(ctx, home, si); err != nil {
				errs = append(errs, fmt.Errorf("move shard %d to %s: %w", i, home.ID, err))
				continue
			}
			g.present[i] = true
		}
		drop = append(drop, i)
	}
	if len(drop) > 0 && slices.Contains(g.present, false) {
		kept := int64(len(drop))
		drop = nil
		h.update(func(p *Progress) { p.Kept += kept })
		h.m.kept.Add(float64(kept))
	}
	for _, i := range drop {
		// The chunk is complete at its homes: drop the old copy.
		n, err := h.cfg.Local.DeleteShards(ctx, []chunkstore.ShardKey{g.local[i].Key}, 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h.update(func(p *Progress) { p.Dropped += int64(n) })
		h.m.dropped.Add(float64(n))
	}
	// Rebuilds: positions missing at a reachable home. One node does them:
	// the home of the lowest position present at its home.
	var missing []int
	for i := range g.homes {
		if !g.present[i] && g.reach[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 && (leader == self || leader == "") {
		// A missing shard still held at its previous home will be moved
		// there by its holder: rebuild only the ones that are gone.
		missing = h.notAtOldHomes(ctx, ref, g.profile, missing)
	}
	if len(missing) > 0 && (leader == self || leader == "") {
		size := int64(chunkstore.ShardSize(int(anyInfo(g).ChunkSize), int(g.profile.K)))
		if err := h.limiter.WaitN(ctx, int(min(size*int64(int(g.profile.K)+len(missing)), int64(h.limiter.Burst())))); err != nil && h.limiter.Limit() != rate.Inf {
			return err
		}
		res, err := h.cfg.Store.RepairPositions(ctx, ref, g.profile, missing)
		if errors.Is(err, erasure.ErrOtherProfile) {
			// The chunk was re-encoded while this node's shards of the old
			// profile were away: they are leftovers once the new profile
			// is complete.
			n, derr := h.cfg.Store.DropSuperseded(ctx, ref, g.profile)
			if derr == nil {
				h.update(func(p *Progress) { p.Superseded += int64(n) })
				h.m.superseded.Add(float64(n))
				return errors.Join(errs...)
			}
			if !errors.Is(derr, erasure.ErrNotSuperseded) {
				errs = append(errs, derr)
			}
		}
		if len(res.Written) > 0 {
			h.update(func(p *Progress) {
				p.Rebuilt += int64(len(res.Written))
				p.RebuiltBytes += res.Bytes
			})
			h.m.rebuilt.Add(float64(len(res.Written)))
			h.m.rebuiltBytes.Add(float64(res.Bytes))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// notAtOldHomes filters out positions whose shard is at its current home
// by now, or still at its home under a previous map (on an up node other
// than this one), where its holder will move it.
func (h *Healer) notAtOldHomes(ctx context.Context, ref chunkstore.Ref, p chunkstore.Profile, missing []int) []int {
	if len(h.history) == 0 {
		return missing
	}
	up := map[string]bool{}
	for _, n := range h.cfg.Store.Map().Up() {
		up[n.ID] = true
	}
	cur := h.cfg.Store.Placer()
	var out []int
	for _, i := range missing {
		held := false
		// Old homes first, then the current one: a holder pushes its copy
		// before deleting it, so in this order a move in flight is seen.
		for _, old := range append(append([]*placement.Placer(nil), h.history...), cur) {
			homes := old.Place(ref, p.N())
			if homes == nil || !up[homes[i].ID] || homes[i].ID == h.cfg.NodeID {
				continue
			}
			st, err := h.cfg.Store.Dial(homes[i])
			if err != nil {
				continue
			}
			res, err := st.StatShards(ctx, []chunkstore.ShardKey{{Ref: ref, Profile: p, Index: uint8(i)}})
			if err == nil && len(res) == 1 && res[0].Err == nil {
				held = true
				break
			}
		}
		if !held {
			out = append(out, i)
		}
	}
	return out
}

// reprofile re-encodes the chunk of group g to g.target and deletes the
// old profile's shards once the new ones are durable (erasure.Reprofile).
func (h *Healer) reprofile(ctx context.Context, ref chunkstore.Ref, g *group) error {
	size := int64(anyInfo(g).ChunkSize)
	cost := size + size/int64(g.target.K)*int64(g.target.N()) // read the chunk, write the new shards
	if err := h.limiter.WaitN(ctx, int(min(cost, int64(h.limiter.Burst())))); err != nil && h.limiter.Limit() != rate.Inf {
		return err
	}
	res, err := h.cfg.Store.Reprofile(ctx, ref, g.profile, g.target)
	// Only the node that wrote the new shards counts the re-encoding: one
	// that found it done (another node's healer got there first, seeing
	// the homes a moment earlier) only deleted leftovers.
	did := err == nil && len(res.Written) > 0
	h.update(func(p *Progress) {
		p.Superseded += int64(res.Deleted)
		if did {
			p.Reprofiled++
			p.ReprofiledBytes += res.Bytes
			if res.To.M < g.profile.M {
				p.ReducedParity++
			}
		}
	})
	h.m.superseded.Add(float64(res.Deleted))
	if err != nil {
		return fmt.Errorf("re-encode %s to %s: %w", g.profile, g.target, err)
	}
	if !did {
		return nil
	}
	h.m.reprofiled.Inc()
	h.m.reprofiledBytes.Add(float64(res.Bytes))
	if res.To.M < g.profile.M {
		h.m.reducedParity.Inc()
		h.log.Warn("too few failure domains to keep the parity count; chunk re-encoded with less",
			"chunk", ref.Short(), "from", g.profile.String(), "to", res.To.String())
	}
	return nil
}

func anyInfo(g *group) chunkstore.ShardInfo {
	for _, si := range g.local {
		return si
	}
	return chunkstore.ShardInfo{}
}

// push copies a local shard (read and verified) to its home.
func (h *Healer) push(ctx context.Context, home placement.Node, si chunkstore.ShardInfo) error {
	if err := h.limiter.WaitN(ctx, int(min(int64(si.Size), int64(h.limiter.Burst())))); err != nil && h.limiter.Limit() != rate.Inf {
		return err
	}
	res, err := h.cfg.Local.GetShards(ctx, []chunkstore.ShardKey{si.Key})
	if err != nil {
		return err
	}
	defer chunkstore.ReleaseResults(res) // PutShards does not keep the data
	if res[0].Err != nil {
		return res[0].Err
	}
	st, err := h.cfg.Store.Dial(home)
	if err != nil {
		return err
	}
	if err := st.PutShards(ctx, []chunkstore.Shard{res[0].Shard}); err != nil {
		return err
	}
	h.update(func(p *Progress) {
		p.Moved++
		p.MovedBytes += int64(si.Size)
	})
	h.m.moved.Inc()
	h.m.movedBytes.Add(float64(si.Size))
	return nil
}

type metrics struct {
	reg          *prometheus.Registry
	collectors   []prometheus.Collector
	rebuilt      prometheus.Counter
	rebuiltBytes prometheus.Counter
	moved        prometheus.Counter
	movedBytes   prometheus.Counter
	dropped      prometheus.Counter
	kept         prometheus.Counter
	failed       prometheus.Counter

	reprofiled, reprofiledBytes, reducedParity, superseded prometheus.Counter
}

func newMetrics(h *Healer, reg *prometheus.Registry) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	g := func(name, help string, f func(Progress) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(h.Progress()) })
	}
	m := &metrics{
		reg:          reg,
		rebuilt:      c("zos_heal_rebuilt_shards_total", "Shards rebuilt from redundancy and written to their home."),
		rebuiltBytes: c("zos_heal_rebuilt_bytes_total", "Bytes of shards rebuilt."),
		moved:        c("zos_heal_moved_shards_total", "Local shards copied to their new home."),
		movedBytes:   c("zos_heal_moved_bytes_total", "Bytes of shards moved."),
		dropped:      c("zos_heal_dropped_shards_total", "Old local copies deleted after their home had them."),
		kept:         c("zos_heal_kept_shards_total", "Old local copies kept although their home has them: another shard of the chunk was not at its home yet."),
		failed:       c("zos_heal_failed_chunks_total", "Chunks a pass could not heal."),

		reprofiled:      c("zos_heal_reprofiled_chunks_total", "Chunks re-encoded to a profile that fits the cluster's failure domains."),
		reprofiledBytes: c("zos_heal_reprofiled_bytes_total", "Bytes of new-profile shards written by re-encoding."),
		reducedParity:   c("zos_heal_reduced_parity_chunks_total", "Re-encoded chunks whose parity count had to drop (too few failure domains)."),
		superseded:      c("zos_heal_superseded_shards_total", "Shards of a re-encoded chunk's old profile deleted."),
	}
	m.collectors = []prometheus.Collector{m.rebuilt, m.rebuiltBytes, m.moved, m.movedBytes, m.dropped, m.kept, m.failed,
		m.reprofiled, m.reprofiledBytes, m.reducedParity, m.superseded,
		g("zos_heal_running", "1 while a heal pass runs.", func(p Progress) float64 { return b2f(p.Running) }),
		g("zos_heal_shards_total", "Local shards the current pass examines.", func(p Progress) float64 { return float64(p.ShardsTotal) }),
		g("zos_heal_shards_done", "Local shards the current pass has examined.", func(p Progress) float64 { return float64(p.ShardsDone) }),
		g("zos_heal_bytes_total", "Local shard bytes the current pass examines.", func(p Progress) float64 { return float64(p.BytesTotal) }),
		g("zos_heal_bytes_done", "Local shard bytes the current pass has examined.", func(p Progress) float64 { return float64(p.BytesDone) }),
		g("zos_heal_rate_bytes_per_second", "Examination rate of the current pass.", func(p Progress) float64 { return p.Rate }),
		g("zos_heal_eta_seconds", "Estimated time left in the current pass.", func(p Progress) float64 { return p.ETA.Seconds() }),
	}
	if reg != nil {
		for _, x := range m.collectors {
			reg.MustRegister(x)
		}
	}
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, x := range m.collectors {
		m.reg.Unregister(x)
	}
}
