package erasure

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// This file holds the write quorum of Put and PutMany (see "Writes" in
// doc.go for why it is what it is).

// MinDurable is how many shards of profile p must be durable for a write
// to succeed when every home of the chunk answers: WriteQuorum(p, p.N()).
func MinDurable(p chunkstore.Profile) int { return WriteQuorum(p, p.N()) }

// WriteQuorum is how many shards of profile p must be durable for a write
// to succeed when live of its k+m homes (positions) are reachable: all of
// them for k+0 (nothing to lose); else k+1 when at least k+1 homes are
// live (one more failure is survived once the write is acknowledged), and
// k when fewer are (the chunk is readable, and as redundant as the chunks
// already stored on those homes; the missing shards are rebuilt when their
// nodes answer again). Never fewer than k, never more than k+m: with fewer
// than k live homes no write succeeds.
func WriteQuorum(p chunkstore.Profile, live int) int {
	if p.M == 0 {
		return p.N()
	}
	if live >= int(p.K)+1 {
		return int(p.K) + 1
	}
	return int(p.K)
}

// unreachable reports whether a node's failed write means the node is not
// live: a transport failure (no connection, no answer in time, a dial
// refused), which wraps chunkstore.ErrUnavailable. A node that answered
// with an error (disk full, corruption, a refused request) is live: its
// position counts toward the quorum although its shard was not stored.
func unreachable(err error) bool { return errors.Is(err, chunkstore.ErrUnavailable) }

// fate is what became of one shard position of a write.
type fate uint8

const (
	fateNone    fate = iota // not attempted
	fateWritten             // durable at its home
	fateDown                // its home did not answer (not live)
	fateRefused             // its home answered with an error (live)
)

// fateOf classifies a node's answer to a write.
func fateOf(err error) fate {
	switch {
	case err == nil:
		return fateWritten
	case unreachable(err):
		return fateDown
	}
	return fateRefused
}

// writeOutcome is what a write of some positions of one chunk observed.
type writeOutcome struct {
	homes []placement.Node // of every position (nil: no node is up)
	fates []fate           // per position
	errs  []error          // one per failed node request
}

// written returns the positions stored, in order.
func (o writeOutcome) written() []int {
	var out []int
	for i, f := range o.fates {
		if f == fateWritten {
			out = append(out, i)
		}
	}
	return out
}

// settle applies the write quorum to a write of every shard of chunk ref
// (profile p, size bytes): nil when the chunk is acknowledged, else a
// chunkstore.ErrUnavailable naming the unreachable nodes and wrapping every
// node's error. An acknowledged chunk with shards missing is counted,
// logged (rarely) and remembered in the pending repairs.
func (s *Store) settle(ref chunkstore.Ref, p chunkstore.Profile, size int, o writeOutcome) error {
	n := p.N()
	var written, down int
	var downNodes []string
	var miss []pendingPos
	for i, f := range o.fates {
		switch f {
		case fateWritten:
			written++
			continue
		case fateDown:
			down++
			if id := o.homes[i].ID; !slices.Contains(downNodes, id) {
				downNodes = append(downNodes, id)
			}
		}
		if o.homes != nil {
			miss = append(miss, pendingPos{pos: i, node: o.homes[i].ID})
		}
	}
	quorum := WriteQuorum(p, n-down)
	if written < quorum {
		s.m.putErrors.Inc()
		slices.Sort(downNodes)
		why := ""
		if len(downNodes) > 0 {
			why = fmt.Sprintf(" (%d of %d homes reachable; unreachable: %s)", n-down, n, strings.Join(downNodes, ", "))
		}
		return fmt.Errorf("%w: chunk %s: %d of %d shards stored, need %d%s: %w",
			chunkstore.ErrUnavailable, ref.Short(), written, n, quorum, why, errors.Join(o.errs...))
	}
	if written == n {
		return nil
	}
	s.m.partialPuts.Inc()
	if down > 0 {
		s.m.degradedPuts.Inc()
		if count, nodes, ok := s.degradedLog.Note(downNodes...); ok {
			s.log.Warn("chunks written degraded: some shard homes are unreachable; their shards are rebuilt when they answer again",
				"chunks", count, "unreachable", strings.Join(nodes, ","), "example", ref.Short(), "quiet_for", s.degradedLog.Every)
		}
	}
	if !s.pending.add(ref, p, size, miss) {
		s.m.pendingDropped.Inc()
	}
	return nil
}
