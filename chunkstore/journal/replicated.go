package journal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/internal/slogx"
)

// ReplicatedConfig configures a Replicated.
type ReplicatedConfig struct {
	// Map returns the current cluster map. Required.
	Map func() placement.Map
	// Dial returns a node's Log: this node's Dir for itself, a
	// remote.Client for the others. Required.
	Dial func(placement.Node) (Log, error)
	// Copies is the number of nodes that must hold an append. Default 2.
	Copies int
	// Timeout bounds each operation (all its nodes in parallel).
	// Default 10s.
	Timeout time.Duration
	// Logger (component "journal"). Default: discard.
	Logger *slog.Logger
}

func (c *ReplicatedConfig) setDefaults() {
	if c.Copies == 0 {
		c.Copies = 2
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether c (after defaults) is usable.
func (c ReplicatedConfig) Validate() error {
	c.setDefaults()
	switch {
	case c.Map == nil:
		return fmt.Errorf("%w: Map is required", ErrConfig)
	case c.Dial == nil:
		return fmt.Errorf("%w: Dial is required", ErrConfig)
	case c.Copies < 1:
		return fmt.Errorf("%w: Copies must be positive", ErrConfig)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout must not be negative", ErrConfig)
	}
	return nil
}

// Replicated is a journal over the cluster's nodes (see the package doc).
// An operation returns once every node it asked answered or gave up at
// Timeout (the Logs Dial returns must honour their context); an Append's
// records are not kept after it returns. It is safe for concurrent use.
type Replicated struct {
	cfg      ReplicatedConfig
	log      *slog.Logger
	copies   int
	failover *slogx.Rare // shared by the views
}

var _ Log = (*Replicated)(nil)

// NewReplicated returns a Replicated journal.
func NewReplicated(cfg ReplicatedConfig) (*Replicated, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Replicated{cfg: cfg, log: cfg.Logger.With("component", "journal"), copies: cfg.Copies, failover: &slogx.Rare{Every: time.Minute}}, nil
}

// WithCopies returns a view of r whose appends go to n nodes (and whose
// reads and trims tolerate n-1 silent ones); n < 1 keeps r's count. The
// writer and the reader of a journal must use the same count.
func (r *Replicated) WithCopies(n int) Log {
	v := *r
	if n >= 1 {
		v.copies = n
	}
	return &v
}

// Append sends recs to the first Copies nodes of the rendezvous ranking of
// name over the eligible (up) nodes, in parallel, and succeeds when Copies
// distinct nodes have them durably. A node that is unreachable (its error
// wraps chunkstore.ErrUnavailable: no connection, no answer in time, or
// ErrSyncFailed: its copy of the journal failed an fdatasync) is replaced
// by the next node of the ranking, until Copies acknowledged or
// the ranking is exhausted (then chunkstore.ErrUnavailable, naming the
// nodes). A node that is sealed at a newer epoch makes it ErrFenced at
// once, and any other refusal (ErrFull, ErrInvalid, a damaged journal)
// fails it: those are answers, not absences. Fewer eligible nodes than
// Copies is chunkstore.ErrUnavailable. See the package doc for why
// fencing and reads still hold.
func (r *Replicated) Append(ctx context.Context, name string, epoch uint64, recs []Record) error {
	if err := CheckAppend(name, epoch, recs); err != nil {
		return err
	}
	m := r.cfg.Map()
	p, err := placement.New(m)
	if err != nil {
		return fmt.Errorf("journal %q: %w", name, err)
	}
	eligible := len(p.Eligible())
	if eligible < r.copies {
		return fmt.Errorf("%w: journal %q needs %d nodes for an append; the cluster map (epoch %d) has %d up",
			chunkstore.ErrUnavailable, name, r.copies, m.Epoch, eligible)
	}
	// The first Copies of the ranking, then (only if one is unreachable)
	// the rest of it in order: the positions of a longer placement need
	// not start with the shorter one's, so the spares are what it adds.
	ref := RefOf(name)
	nodes := p.Place(ref, r.copies)
	first := nodes
	var spares []placement.Node
	ranked := false
	rankSpares := func() {
		if ranked {
			return
		}
		ranked = true
		for _, n := range p.Place(ref, eligible) {
			if !slices.ContainsFunc(first, func(x placement.Node) bool { return x.ID == n.ID }) {
				spares = append(spares, n)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	acked := 0
	var failed []error
	var lines, away []string
	for len(nodes) > 0 {
		errs := r.each(ctx, nodes, func(ctx context.Context, _ int, l Log) error {
			return l.Append(ctx, name, epoch, recs)
		})
		want := 0
		for i, err := range errs {
			switch {
			case err == nil:
				acked++
				continue
			case errors.Is(err, ErrFenced):
				return fmt.Errorf("journal %q: append at epoch %d refused by node %s: %w", name, epoch, nodes[i].ID, err)
			case errors.Is(err, chunkstore.ErrUnavailable) && ctx.Err() == nil:
				want++ // replace it
				away = append(away, nodes[i].ID)
			}
			failed = append(failed, err)
			lines = append(lines, fmt.Sprintf("%s: %v", nodes[i].ID, err))
		}
		if acked == r.copies || want == 0 || len(failed) > len(away) {
			break // done, or an answer that no other node changes
		}
		rankSpares()
		want = min(want, len(spares))
		nodes, spares = spares[:want], spares[want:]
	}
	if acked == r.copies {
		if len(away) > 0 {
			if count, nodes, ok := r.failover.Note(away...); ok {
				r.log.Warn("journal appends went to the next nodes of their ranking: some nodes are unreachable",
					"appends", count, "unreachable", strings.Join(nodes, ","), "example", name, "quiet_for", r.failover.Every)
			}
		}
		return nil
	}
	return &nodesError{
		msg: fmt.Sprintf("journal %q: append at epoch %d (seq %d to %d) acknowledged by %d of the %d nodes it needs (%d eligible): %s",
			name, epoch, recs[0].Seq, recs[len(recs)-1].Seq, acked, r.copies, eligible, strings.Join(lines, "; ")),
		errs: failed,
	}
}

// Read asks every node of the map that is not Removed, in parallel, to
// seal name at seal and return its records; it merges them (one record
// per (Epoch, Seq)) in order. It needs answers from all but Copies-1 of
// the nodes asked, so that every acknowledged record has a copy among
// them and every set of Copies nodes holds a sealed one; with fewer it
// fails with chunkstore.ErrUnavailable.
func (r *Replicated) Read(ctx context.Context, name string, seal uint64) ([]Record, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if seal == All {
		return nil, fmt.Errorf("%w: journal %q: seal %d", ErrInvalid, name, seal)
	}
	nodes := r.members()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	got := make([][]Record, len(nodes))
	errs := r.each(ctx, nodes, func(ctx context.Context, i int, l Log) error {
		recs, err := l.Read(ctx, name, seal)
		got[i] = recs
		return err
	})
	var all []Record
	for _, recs := range got {
		all = append(all, recs...)
	}
	if err := r.quorum("read", name, nodes, errs); err != nil {
		return nil, err
	}
	return sortRecords(all), nil
}

// Trim asks every node of the map that is not Removed, in parallel, to
// trim name. It fails only if fewer than all but Copies-1 of them did.
func (r *Replicated) Trim(ctx context.Context, name string, epoch, seq uint64) error {
	if err := CheckName(name); err != nil {
		return err
	}
	nodes := r.members()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	errs := r.each(ctx, nodes, func(ctx context.Context, _ int, l Log) error {
		return l.Trim(ctx, name, epoch, seq)
	})
	return r.quorum("trim", name, nodes, errs)
}

// members returns the nodes of the map that are not Removed.
func (r *Replicated) members() []placement.Node {
	var out []placement.Node
	for _, n := range r.cfg.Map().Nodes {
		if n.State != placement.Removed {
			out = append(out, n)
		}
	}
	return out
}

// quorum checks that enough of nodes answered op (errs[i] is node i's
// error): all but Copies-1, and at least one.
func (r *Replicated) quorum(op, name string, nodes []placement.Node, errs []error) error {
	need := max(1, len(nodes)-(r.copies-1))
	var failed []error
	var lines []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, err)
			lines = append(lines, fmt.Sprintf("%s: %v", nodes[i].ID, err))
		}
	}
	ok := len(nodes) - len(failed)
	if ok >= need {
		if len(failed) > 0 {
			r.log.Warn("journal "+op+": some nodes did not answer", "journal", name, "answered", ok, "asked", len(nodes), "errors", strings.Join(lines, "; "))
		}
		return nil
	}
	if len(nodes) == 0 {
		lines = append(lines, "the cluster map has no nodes")
	}
	return &nodesError{
		msg: fmt.Sprintf("%v: journal %q: %s needs answers from %d of %d nodes (all but %d), %d answered: %s",
			chunkstore.ErrUnavailable, name, op, need, len(nodes), r.copies-1, ok, strings.Join(lines, "; ")),
		errs: append([]error{chunkstore.ErrUnavailable}, failed...),
	}
}

// each runs fn on every node's Log in parallel and returns their errors
// once all returned (a Dial failure is that node's error).
func (r *Replicated) each(ctx context.Context, nodes []placement.Node, fn func(context.Context, int, Log) error) []error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			l, err := r.cfg.Dial(n)
			if err == nil {
				err = fn(ctx, i, l)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errs
}

// nodesError reports the nodes that failed an operation and wraps each
// one's error (errors.Is finds ErrUnavailable, ErrFull, ... among them).
type nodesError struct {
	msg  string
	errs []error
}

func (e *nodesError) Error() string   { return e.msg }
func (e *nodesError) Unwrap() []error { return e.errs }
