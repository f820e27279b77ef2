package blockd

// The write journal of a read-write Disk (doc.go, "Write journal").
//
// Every completed write, trim and zeroing is captured into jbuf as an op;
// a FLUSH appends jbuf as one journal.Record to the vdisk's replicated
// journal and answers once every copy has it, while a commit (tree + head)
// starts in the background. A commit covering a record's Seq moves the
// head's journal mark in Raft, so the record may be trimmed and is never
// replayed. A node attaching the vdisk read-write seals the journal with
// its lease epoch (fencing any older writer) and replays, oldest first,
// the records of older epochs after the mark; replaying an op is
// idempotent, so replaying records the head already holds is harmless.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/raft/fsm"
)

// Journal op kinds.
const (
	jWrite = 1 // data of len bytes follows
	jTrim  = 2
	jZero  = 3 // flags: nbd.ZeroFlags without FUA and FAST
)

const jopHeader = 1 + 1 + 8 + 8 // kind, flags, off, len

const (
	// maxJournalBuffer: captured ops beyond this fall back to commits
	// until one covers them.
	maxJournalBuffer = 16 << 20
	// maxJournalBytes: appended records not yet trimmed; beyond it a
	// FLUSH commits (and the commit trims).
	maxJournalBytes = 32 << 20
	// trimEvery: appended bytes covered by commits that make a trim
	// worth it at once; less is trimmed when the journal is idle.
	trimEvery = 4 << 20
	// A commit follows appends by at most commitDelay, or at once when
	// commitBytes were appended since the last one started: a commit per
	// many FLUSHes costs fewer tree nodes and Raft commits per write.
	commitDelay = 50 * time.Millisecond
	commitBytes = 4 << 20
	// journalPause: FLUSHes commit this long after an append failed.
	journalPause = 10 * time.Second
)

// journalState is the capture of completed mutations for the journal and
// its appends; log nil: no journal (every FLUSH commits).
type journalState struct {
	log      journal.Log
	name     string // journalName
	buf      []byte // ops captured since the last append: the next record's payload
	spare    []byte // a free payload buffer
	cut      uint64 // seq.completed at the last capture into buf
	done     uint64 // completed mutations up to this count are durable (appended or committed)
	drop     uint64 // completed mutations up to this count may be missing from the journal (dropped, or a failed append)
	acked    uint64 // completed mutations up to this count are in appended records (those not dropped)
	run      *commitRun
	appended []jmark // appended records not trimmed yet
	last     uint64  // Seq of the last record appended
	trimming bool
	trimAt   time.Time
	timer    *time.Timer // the commit after appends (commitSoonLocked)
	pause    time.Time   // no appends before (one failed)
}

// jop is one decoded journal op.
type jop struct {
	kind  byte
	flags byte
	off   int64
	n     int64
	data  []byte // jWrite: n bytes (aliases the payload)
}

func appendOp(b []byte, kind, flags byte, off, n int64, data []byte) []byte {
	b = append(b, kind, flags)
	b = binary.LittleEndian.AppendUint64(b, uint64(off))
	b = binary.LittleEndian.AppendUint64(b, uint64(n))
	return append(b, data...)
}

// decodeOps parses a record's payload. The payload is hostile input (it
// comes from the network): every length is checked before use.
func decodeOps(p []byte) ([]jop, error) {
	var ops []jop
	for len(p) > 0 {
		if len(p) < jopHeader {
			return nil, fmt.Errorf("journal record: truncated op header (%d bytes)", len(p))
		}
		o := jop{kind: p[0], flags: p[1], off: int64(binary.LittleEndian.Uint64(p[2:])), n: int64(binary.LittleEndian.Uint64(p[10:]))}
		p = p[jopHeader:]
		if o.off < 0 || o.n <= 0 || o.off+o.n < o.off {
			return nil, fmt.Errorf("journal record: op range [%d, +%d) is invalid", o.off, o.n)
		}
		switch o.kind {
		case jWrite:
			if o.n > int64(len(p)) {
				return nil, fmt.Errorf("journal record: write of %d bytes with %d left", o.n, len(p))
			}
			o.data, p = p[:o.n], p[o.n:]
		case jTrim, jZero:
		default:
			return nil, fmt.Errorf("journal record: unknown op kind %d", o.kind)
		}
		ops = append(ops, o)
	}
	return ops, nil
}

// jmark is an appended record not yet trimmed.
type jmark struct {
	seq   uint64
	bytes int64
}

// captureLocked records a completed mutation (just counted in
// seq.completed) for the next journal append.
func (d *Disk) captureLocked(kind, flags byte, off, n int64, data []byte) {
	if d.jr.log == nil {
		return
	}
	if d.jr.drop > d.seq.committed || len(d.jr.buf)+jopHeader+len(data) > maxJournalBuffer {
		// Too much between flushes: FLUSH commits until a commit covers
		// what was not captured (this op, and those in jbuf).
		d.jr.buf = d.jr.buf[:0]
		d.jr.drop = d.seq.completed
		return
	}
	d.jr.buf = appendOp(d.jr.buf, kind, flags, off, n, data)
	d.jr.cut = d.seq.completed
}

// journalUsableLocked reports whether a FLUSH may be answered from the
// journal: everything not yet committed was captured, the journal is not
// too long, and the lease is valid.
func (d *Disk) journalUsableLocked() bool {
	now := time.Now()
	if d.jr.log == nil || d.lease.fenced != nil || d.closed || d.jr.drop > d.seq.committed || !now.Before(d.lease.until) || now.Before(d.jr.pause) {
		return false
	}
	var n int64
	for _, m := range d.jr.appended {
		n += m.bytes
	}
	return n < maxJournalBytes
}

// flushJournal answers a FLUSH from the journal when it can; ok false means
// the caller must commit instead. Concurrent flushes share appends.
func (d *Disk) flushJournal(ctx context.Context) (ok bool, err error) {
	d.mu.Lock()
	if d.jr.log == nil {
		d.mu.Unlock()
		return false, nil
	}
	target := d.seq.completed
	for {
		if d.lease.fenced != nil {
			err := d.lease.fenced
			d.mu.Unlock()
			return true, err
		}
		if d.jr.done >= target {
			d.checkLocked()
			d.mu.Unlock()
			return true, nil
		}
		if r := d.jr.run; r != nil {
			d.mu.Unlock()
			select {
			case <-r.done:
			case <-ctx.Done():
				return true, ctx.Err()
			}
			d.mu.Lock()
			continue
		}
		if !d.journalUsableLocked() {
			d.log.Debug("flush commits", "mutations", target, "durable", d.jr.done, "dropped", d.jr.drop, "committed", d.seq.committed)
			d.mu.Unlock()
			return false, nil
		}
		if len(d.jr.buf) == 0 {
			// Every captured op was appended or committed.
			d.jr.done = d.seq.completed
			continue
		}
		// A record's Seq is above every seq its ops made (a commit that
		// covers it holds them all) and unique: the write seq, bumped.
		d.seq.write++
		rec := journal.Record{Epoch: d.epoch, Seq: d.seq.write, Payload: d.jr.buf}
		count := d.seq.completed
		d.jr.buf = d.jr.spare[:0]
		d.jr.spare = nil
		r := &commitRun{seq: rec.Seq, done: make(chan struct{})}
		d.jr.run = r
		d.mu.Unlock()

		t0 := time.Now()
		actx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
		err := d.jr.log.Append(actx, d.jr.name, d.epoch, []journal.Record{rec})
		cancel()

		d.mu.Lock()
		d.jr.run = nil
		r.err = err
		close(r.done)
		if err == nil {
			if d.jr.spare == nil { // reuse the buffer (Append keeps no reference)
				d.jr.spare = rec.Payload
			}
			d.svc.m.journalSeconds.Observe(time.Since(t0).Seconds())
			d.svc.m.journalBytes.Add(float64(len(rec.Payload)))
			d.jr.done = max(d.jr.done, count)
			d.jr.acked = max(d.jr.acked, count)
			d.log.Debug("flush appended", "seq", rec.Seq, "mutations", count, "bytes", len(rec.Payload))
			d.jr.appended = append(d.jr.appended, jmark{seq: rec.Seq, bytes: int64(len(rec.Payload))})
			d.jr.last = max(d.jr.last, rec.Seq)
			d.commitSoonLocked()
			continue
		}
		// The ops are only in the cache now: commit until that is fixed.
		d.svc.m.journalErrors.Inc()
		d.jr.drop = max(d.jr.drop, count)
		if errors.Is(err, journal.ErrFenced) {
			d.mu.Unlock()
			return true, d.fence(err)
		}
		// A node of the journal may be down and not yet marked so: commit
		// for a while rather than wait for it on every FLUSH.
		d.jr.pause = time.Now().Add(journalPause)
		d.log.Warn("journal append failed; flushing by commit for a while", "err", err, "for", journalPause)
		d.mu.Unlock()
		return false, nil
	}
}

// commitSoonLocked schedules the commit that follows journal appends.
func (d *Disk) commitSoonLocked() {
	var pending int64
	for _, m := range d.jr.appended {
		if m.seq > d.seq.durable {
			pending += m.bytes
		}
	}
	switch {
	case d.seq.run != nil:
		if pending >= commitBytes {
			d.seq.more = true
		}
	case pending >= commitBytes:
		d.startCommitLocked()
	case d.jr.timer == nil:
		d.jr.timer = time.AfterFunc(commitDelay, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.jr.timer = nil
			if d.closed || d.lease.fenced != nil || d.seq.durable >= d.jr.last {
				return
			}
			if d.seq.run != nil {
				d.seq.more = true
				return
			}
			d.startCommitLocked()
		})
	}
}

// committedLocked follows a successful commit c: the mutations it covers
// are durable, captured ops it covers are dropped, and the journal is
// trimmed when enough of it is covered (or all of it, and a trim is due).
func (d *Disk) committedLocked(c *commitRun) {
	d.seq.committed = max(d.seq.committed, c.count)
	d.jr.done = max(d.jr.done, c.count)
	if d.jr.log == nil {
		return
	}
	if c.count >= d.jr.cut && len(d.jr.buf) > 0 && d.jr.run == nil {
		d.jr.buf = d.jr.buf[:0]
	}
	d.maybeTrimLocked(false)
}

// maybeTrimLocked trims the journal up to the durable seq in the
// background when enough of it is covered, or (idle) when all of it is.
func (d *Disk) maybeTrimLocked(idle bool) {
	if d.jr.log == nil || d.jr.trimming || len(d.jr.appended) == 0 {
		return
	}
	upto := d.seq.durable
	var covered int64
	all := true
	for _, m := range d.jr.appended {
		if m.seq > upto {
			all = false
			break
		}
		covered += m.bytes
	}
	if covered == 0 || covered < trimEvery && !(all && (idle || time.Since(d.jr.trimAt) > time.Second)) {
		return
	}
	d.jr.trimming = true
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
		err := d.jr.log.Trim(ctx, d.jr.name, d.epoch, upto)
		cancel()
		d.mu.Lock()
		d.jr.trimming = false
		d.jr.trimAt = time.Now()
		if err == nil {
			i := 0
			for i < len(d.jr.appended) && d.jr.appended[i].seq <= upto {
				i++
			}
			d.jr.appended = d.jr.appended[i:]
		} else if d.ctx.Err() == nil {
			d.log.Warn("journal trim failed; retried after the next commit", "err", err)
		}
		d.mu.Unlock()
	}()
}

// replayJournal applies the journal records of older epochs that the
// head does not hold (v's mark) to a freshly opened read-write Disk, then
// commits them and trims the older epochs away. The Disk has no journal
// attached yet, so the replayed ops are not captured again. required
// means a failure to read the journal fails the attach (the last writer
// did not release cleanly).
func (d *Disk) replayJournal(ctx context.Context, jl journal.Log, v *fsm.VDisk, required bool) error {
	recs, err := jl.Read(ctx, d.jr.name, d.epoch)
	if err != nil {
		if required {
			return fmt.Errorf("blockd: vdisk %s: its last writer did not detach cleanly and its journal cannot be read: %w", d.name, err)
		}
		d.log.Warn("journal unreadable at attach (the last writer detached cleanly, so nothing is lost)", "err", err)
		return nil
	}
	applied, ops := 0, 0
	for _, r := range recs {
		if r.Epoch >= d.epoch || r.Before(v.JournalEpoch, v.JournalSeq) {
			continue
		}
		list, err := decodeOps(r.Payload)
		if err != nil {
			return fmt.Errorf("blockd: vdisk %s: journal record (epoch %d, seq %d): %w", d.name, r.Epoch, r.Seq, err)
		}
		for _, o := range list {
			if err := d.applyOp(ctx, o); err != nil {
				return fmt.Errorf("blockd: vdisk %s: replaying journal record (epoch %d, seq %d): %w", d.name, r.Epoch, r.Seq, err)
			}
		}
		applied++
		ops += len(list)
	}
	if applied > 0 {
		if err := d.Sync(ctx); err != nil {
			return fmt.Errorf("blockd: vdisk %s: committing the replayed journal: %w", d.name, err)
		}
		d.log.Info("journal replayed", "records", applied, "ops", ops, "head", d.Head().Short())
		d.svc.m.journalReplayed.Add(float64(applied))
	}
	if v.JournalEpoch < d.epoch {
		// Mark (epoch, 0) at least: no record of an older epoch is
		// replayed again, even one a fenced writer got onto a node
		// this Read missed, while every record of ours will be.
		head := d.Head()
		if err := d.commitHead(ctx, head, head, d.durableSeqNow()); err != nil {
			return fmt.Errorf("blockd: vdisk %s: marking the journal replayed: %w", d.name, err)
		}
	}
	if len(recs) > 0 {
		if err := jl.Trim(ctx, d.jr.name, d.epoch-1, journal.All); err != nil {
			d.log.Warn("trimming the replayed journal failed (the head's mark covers it)", "err", err)
		}
	}
	return nil
}

func (d *Disk) durableSeqNow() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seq.durable
}

// applyOp replays one op. Ops beyond the current size (the vdisk shrank
// since) are cut or skipped.
func (d *Disk) applyOp(ctx context.Context, o jop) error {
	size := d.Size()
	if o.off >= size {
		return nil
	}
	if o.off+o.n > size {
		o.n = size - o.off
		if o.data != nil {
			o.data = o.data[:o.n]
		}
	}
	switch o.kind {
	case jWrite:
		return d.WriteAt(ctx, o.data, o.off, false)
	case jTrim:
		return d.Trim(ctx, o.off, o.n, false)
	default:
		return d.WriteZeroes(ctx, o.off, o.n, nbd.ZeroFlags(o.flags)&nbd.ZeroNoHole)
	}
}

// journalName names a vdisk's journal: the vdisk's name and creation time,
// so that a vdisk deleted and created again never sees the old journal.
func journalName(v *fsm.VDisk) string { return fmt.Sprintf("%s@%d", v.Name, v.Created) }

// dropJournal frees a deleted vdisk's journal, best effort (a node that
// misses it keeps a few orphaned bytes; see journalName).
func (s *Service) dropJournal(ctx context.Context, jl journal.Log, jname string) {
	if jl == nil {
		return
	}
	if err := jl.Trim(ctx, jname, journal.All, journal.All); err != nil {
		s.log.Warn("dropping a deleted vdisk's journal failed", "journal", jname, "err", err)
	}
}
