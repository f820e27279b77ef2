package blockd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// leaseState is the read-write lease as this Disk knows it.
type leaseState struct {
	until  time.Time // the lease's expiry, as last granted
	fenced error     // the lease is lost: every write and flush fails with it
	// takeover: this lease took the vdisk over from a failed writer;
	// firstWrite is when the first write completed after it, reported to
	// the control plane with the next head commit (reported).
	takeover   *fsm.Takeover
	firstWrite time.Time
	reported   bool
}

// wroteLocked notes a completed write: the first one after a takeover
// ends the time the vdisk could not be written.
func (d *Disk) wroteLocked() {
	t := d.lease.takeover
	if t == nil || !d.lease.firstWrite.IsZero() {
		return
	}
	d.lease.firstWrite = time.Now()
	took := d.lease.firstWrite.Sub(time.Unix(0, t.LastRenewed))
	d.svc.m.takeover.Observe(took.Seconds())
	d.log.Info("vdisk written again after a takeover", "from", t.From, "from_epoch", t.FromEpoch,
		"since_last_renewal", took.Round(time.Millisecond), "lease_after", time.Duration(t.Acquired-t.LastRenewed).Round(time.Millisecond))
}

// firstWriteLocked is the first write to report with a head commit (0:
// none).
func (d *Disk) firstWriteLocked() int64 {
	if d.lease.firstWrite.IsZero() || d.lease.reported {
		return 0
	}
	return d.lease.firstWrite.UnixNano()
}

// fence marks the lease lost: writes and flushes fail from now on.
func (d *Disk) fence(cause error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lease.fenced == nil {
		d.lease.fenced = fmt.Errorf("%w: vdisk %s (epoch %d): %v; writes fail until it is reattached", ErrLeaseLost, d.label, d.epoch, cause)
		d.svc.m.leaseLost.Inc()
		d.log.Error("READ-WRITE LEASE LOST: the vdisk is read-only on this node; unflushed writes are lost",
			"epoch", d.epoch, "cause", cause, "dirty_blocks", len(d.cache.dirty))
		d.notifyLocked()
	}
	return d.lease.fenced
}

func (d *Disk) renewLoop() {
	defer d.wg.Done()
	cfg := d.svc.cfg
	t := time.NewTicker(cfg.LeaseRenew)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(d.ctx, cfg.LeaseRenew)
		l, err := raft.Apply(ctx, cfg.Control, fsm.LeaseRenew, fsm.LeaseArgs{Name: d.name, Node: cfg.Node, Epoch: d.epoch, TTL: int64(cfg.LeaseTTL)})
		cancel()
		if err == nil {
			if l != nil && l.Expires > 0 {
				d.mu.Lock()
				d.lease.until = time.Unix(0, l.Expires)
				d.mu.Unlock()
			}
			d.svc.m.leaseRenewals.Inc()
			if warned {
				d.log.Info("lease renewed again")
				warned = false
			}
			continue
		}
		if d.ctx.Err() != nil {
			return
		}
		d.svc.m.leaseFailures.Inc()
		if errors.Is(err, fsm.ErrStaleEpoch) || errors.Is(err, fsm.ErrNotFound) {
			d.fence(err)
			return
		}
		d.mu.Lock()
		expired := time.Now().After(d.lease.until)
		d.mu.Unlock()
		if expired {
			d.log.Error("lease renewal failing and the lease has expired; another node may take the vdisk over, which fences this one", "err", err)
		} else {
			d.log.Warn("lease renewal failed; retrying", "err", err)
		}
		warned = true
	}
}
