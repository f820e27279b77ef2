package blockd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

func refString(r chunkstore.Ref) string {
	if r.IsZero() {
		return ""
	}
	return r.String()
}

func infoOf(v *fsm.VDisk, now time.Time) VDiskInfo {
	in := VDiskInfo{
		Name: v.Name, Type: v.Type, Pool: v.Pool, Size: v.Size, BlockSize: v.BlockSize,
		Head: refString(v.Head), Generation: v.Generation, Parent: v.Parent,
		Created: time.Unix(0, v.Created).UTC(), Modified: time.Unix(0, v.Modified).UTC(),
		Snapshots: []SnapshotInfo{},
	}
	if v.Lease != nil && now.UnixNano() < v.Lease.Expires {
		in.AttachedTo, in.LeaseEpoch = v.Lease.Node, v.Lease.Epoch
	} else {
		in.Unreplayed = v.Journaled
	}
	for _, sn := range v.Snapshots {
		in.Snapshots = append(in.Snapshots, snapInfo(sn))
	}
	if t := v.Takeover; t != nil {
		ti := &TakeoverInfo{From: t.From, FromEpoch: t.FromEpoch, Node: t.Node, Epoch: t.Epoch,
			At: time.Unix(0, t.Acquired).UTC(), Seconds: time.Duration(t.Acquired - t.LastRenewed).Seconds()}
		if t.FirstWrite > 0 {
			ti.Seconds, ti.Written = time.Duration(t.FirstWrite-t.LastRenewed).Seconds(), true
		}
		in.Takeover = ti
	}
	return in
}

func snapInfo(sn *fsm.Snapshot) SnapshotInfo {
	return SnapshotInfo{Name: sn.Name, Head: refString(sn.Head), Size: sn.Size, Created: time.Unix(0, sn.Created).UTC()}
}

// sameClass reports whether vdisks of types a and b can share chunks: cache
// vdisks live in the pool's non-redundant store, the others in its
// redundant one.
func sameClass(a, b string) bool { return (a == fsm.VDiskCache) == (b == fsm.VDiskCache) }

// CreateOptions describe a new vdisk.
type CreateOptions struct {
	Name string `json:"name"`
	// Size in bytes, a multiple of 512. With From, 0 means the source's
	// size (a larger size grows the clone); with an image it is required.
	Size int64 `json:"size,omitempty"`
	// BlockSize is a power of two from 4 KiB to 1 MiB; 0 means the
	// service default (or the source's with From).
	BlockSize int64 `json:"block_size,omitempty"`
	// Type is boot, db, cache or tmp; default db (boot with From).
	Type string `json:"type,omitempty"`
	// Pool is the storage pool; default "default".
	Pool string `json:"pool,omitempty"`
	// From is NAME@SNAP: the new vdisk starts as a copy-on-write clone of
	// that snapshot (O(1)).
	From string `json:"from,omitempty"`
}

// Create makes a vdisk: empty, a clone of opts.From, or filled from image
// (a raw stream, when non-nil; progress, if set, gets the bytes read so
// far). A failed image import deletes the half-made vdisk.
func (s *Service) Create(ctx context.Context, opts CreateOptions, image io.Reader, progress func(int64)) (VDiskInfo, error) {
	if opts.From != "" {
		if image != nil {
			return VDiskInfo{}, invalidf("create %s: give --from or an image, not both", opts.Name)
		}
		return s.createFrom(ctx, opts)
	}
	if opts.Type == "" {
		opts.Type = fsm.VDiskDB
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = s.cfg.DefaultBlockSize
	}
	if opts.Size <= 0 {
		return VDiskInfo{}, invalidf("create %s: a size is required", opts.Name)
	}
	v, err := raft.Apply(ctx, s.cfg.Control, fsm.VDiskCreate, fsm.VDiskCreateArgs{Name: opts.Name, Size: opts.Size,
		BlockSize: opts.BlockSize, Type: opts.Type, Pool: opts.Pool})
	if err != nil {
		return VDiskInfo{}, err
	}
	s.log.Info("vdisk created", "vdisk", v.Name, "size", v.Size, "block_size", v.BlockSize, "type", v.Type, "pool", v.Pool)
	if image != nil {
		if err := s.Import(ctx, opts.Name, image, progress); err != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if derr := raft.Exec(dctx, s.cfg.Control, fsm.VDiskDelete, fsm.VDiskDeleteArgs{Name: opts.Name, Force: true}); derr != nil {
				s.log.Warn("could not delete vdisk after a failed import", "vdisk", opts.Name, "err", derr)
			}
			return VDiskInfo{}, err
		}
		return s.Get(ctx, opts.Name, false)
	}
	return infoOf(v, time.Now()), nil
}

// ParseSnapshotRef splits NAME@SNAP.
func ParseSnapshotRef(ref string) (name, snap string, err error) {
	name, snap, ok := strings.Cut(ref, "@")
	if !ok || name == "" || snap == "" {
		return "", "", invalidf("%q: want NAME@SNAPSHOT", ref)
	}
	return name, snap, nil
}

func (s *Service) createFrom(ctx context.Context, opts CreateOptions) (VDiskInfo, error) {
	src, snap, err := ParseSnapshotRef(opts.From)
	if err != nil {
		return VDiskInfo{}, err
	}
	v, err := s.vdisk(ctx, src)
	if err != nil {
		return VDiskInfo{}, err
	}
	sn := v.Snapshot(snap)
	if sn == nil {
		return VDiskInfo{}, &fsm.Error{Code: fsm.ErrNotFound.Code, Msg: fmt.Sprintf("vdisk %s has no snapshot %q", src, snap)}
	}
	switch {
	case opts.BlockSize != 0 && opts.BlockSize != v.BlockSize:
		return VDiskInfo{}, invalidf("create %s: --from %s has block size %d; a clone keeps it (omit --block-size)", opts.Name, opts.From, v.BlockSize)
	case opts.Pool != "" && opts.Pool != v.Pool:
		return VDiskInfo{}, invalidf("create %s: --from %s lives in pool %s; a clone stays there (omit --pool)", opts.Name, opts.From, v.Pool)
	case opts.Size != 0 && opts.Size < sn.Size:
		return VDiskInfo{}, invalidf("create %s: size %d is smaller than snapshot %s (%d bytes); omit --size or give at least that", opts.Name, opts.Size, opts.From, sn.Size)
	}
	typ := opts.Type
	if typ == "" {
		typ = fsm.VDiskBoot
	}
	info, err := s.Clone(ctx, src, snap, opts.Name, typ)
	if err != nil {
		return VDiskInfo{}, err
	}
	if opts.Size > sn.Size {
		return s.Resize(ctx, opts.Name, opts.Size, false)
	}
	return info, nil
}

// ListVDisks returns every vdisk, by name.
func (s *Service) ListVDisks(ctx context.Context) ([]VDiskInfo, error) {
	out := []VDiskInfo{}
	now := time.Now()
	err := s.cfg.Control.Read(ctx, func(st *fsm.State) error {
		for _, v := range st.SortedVDisks() {
			out = append(out, infoOf(v, now))
		}
		return nil
	})
	return out, err
}

// Get describes one vdisk; with allocated it also walks the head's tree to
// count the allocated bytes (O(allocated blocks)).
func (s *Service) Get(ctx context.Context, name string, allocated bool) (VDiskInfo, error) {
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return VDiskInfo{}, err
	}
	in := infoOf(v, time.Now())
	if allocated {
		_, tr, err := s.storeFor(v.Pool, v.Type)
		if err != nil {
			return VDiskInfo{}, err
		}
		var n int64
		if err := tr.Walk(ctx, v.Head, 0, ^uint64(0), func(uint64, tree.Entry) error { n++; return nil }); err != nil {
			return VDiskInfo{}, fmt.Errorf("blockd: vdisk %s: walk tree: %w", name, err)
		}
		in.Allocated = n * v.BlockSize
	}
	return in, nil
}

// Delete removes a vdisk (its snapshots too). It refuses while the vdisk is
// attached read-write anywhere, unless force.
func (s *Service) Delete(ctx context.Context, name string, force bool) error {
	if !force {
		if d := s.localRW(name); d != nil {
			return fmt.Errorf("%w: vdisk %s is attached read-write on this node (%s); detach it first or use --force", ErrBusy, name, s.cfg.Node)
		}
	}
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return err
	}
	if err := raft.Exec(ctx, s.cfg.Control, fsm.VDiskDelete, fsm.VDiskDeleteArgs{Name: name, Force: force}); err != nil {
		return err
	}
	s.log.Info("vdisk deleted", "vdisk", name, "force", force)
	if s.cfg.JournalFor != nil {
		s.dropJournal(ctx, s.cfg.JournalFor(v.Pool, v.Type), journalName(v))
	}
	return nil
}

// Resize changes a vdisk's size. Growing is always allowed (connections
// see the new size when they reconnect). Shrinking needs force: it takes
// the lease (so the vdisk must not be attached read-write), drops the
// blocks past the new end from the tree and zeroes the tail of the last
// block, so growing again later shows zeroes there.
func (s *Service) Resize(ctx context.Context, name string, size int64, force bool) (VDiskInfo, error) {
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return VDiskInfo{}, err
	}
	if size >= v.Size || !force {
		nv, err := raft.Apply(ctx, s.cfg.Control, fsm.VDiskResize, fsm.VDiskResizeArgs{Name: name, Size: size, Force: force})
		if err != nil {
			return VDiskInfo{}, err
		}
		if d := s.localRW(name); d != nil {
			d.setSize(nv.Size)
		}
		s.log.Info("vdisk resized", "vdisk", name, "from", v.Size, "to", nv.Size)
		return infoOf(nv, time.Now()), nil
	}
	if size <= 0 || size%512 != 0 {
		return VDiskInfo{}, invalidf("size %d: want a positive multiple of 512", size)
	}
	var out VDiskInfo
	err = s.withLease(ctx, name, "shrink", func(ctx context.Context, epoch uint64, v *fsm.VDisk) error {
		st, tr, err := s.storeFor(v.Pool, v.Type)
		if err != nil {
			return err
		}
		bs := v.BlockSize
		nblocks := uint64((size + bs - 1) / bs)
		root, err := tr.Truncate(ctx, v.Head, nblocks)
		if err != nil {
			return fmt.Errorf("blockd: vdisk %s: truncate: %w", name, err)
		}
		if tail := size % bs; tail != 0 {
			last := nblocks - 1
			e, err := tr.Lookup(ctx, root, last)
			if err != nil {
				return err
			}
			if fetchable(e.Ref) {
				got, err := readEntries(ctx, st, bs, []tree.Entry{e})
				if err != nil {
					return fmt.Errorf("blockd: vdisk %s: read last block: %w", name, err)
				}
				data := got[0]
				if int64(len(data)) > tail {
					var nr chunkstore.Ref
					if kept := trimZeros(data[:tail]); len(kept) > 0 {
						if nr, err = st.Put(ctx, kept); err != nil {
							return fmt.Errorf("blockd: vdisk %s: store last block: %w", name, err)
						}
					}
					if root, err = tr.Update(ctx, root, []tree.Change{{Index: last, Entry: tree.Entry{Ref: nr}}}); err != nil {
						return err
					}
				}
			}
		}
		old := v.Head
		nv, err := raft.Apply(ctx, s.cfg.Control, fsm.VDiskResize, fsm.VDiskResizeArgs{Name: name, Size: size, Force: true,
			Epoch: epoch, OldHead: &old, NewHead: &root})
		if err != nil {
			return err
		}
		s.log.Info("vdisk shrunk", "vdisk", name, "from", v.Size, "to", size)
		out = infoOf(nv, time.Now())
		return nil
	})
	return out, err
}

// withLease runs fn holding the vdisk's read-write lease (renewed in the
// background), with the vdisk marked busy on this node. fn gets the record
// read after the lease was granted.
func (s *Service) withLease(ctx context.Context, name, what string, fn func(ctx context.Context, epoch uint64, v *fsm.VDisk) error) error {
	if err := s.settle(ctx, name); err != nil {
		return err
	}
	done, err := s.exclusive(name, what)
	if err != nil {
		return err
	}
	defer done()
	l, err := s.acquire(ctx, name, false)
	if err != nil {
		return err
	}
	defer s.releaseLease(name, l.Epoch)
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(s.cfg.LeaseRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, s.cfg.LeaseRenew)
			err := raft.Exec(rctx, s.cfg.Control, fsm.LeaseRenew, fsm.LeaseArgs{Name: name, Node: s.cfg.Node, Epoch: l.Epoch, TTL: int64(s.cfg.LeaseTTL)})
			rcancel()
			switch {
			case err == nil:
				s.m.leaseRenewals.Inc()
			case errors.Is(err, fsm.ErrStaleEpoch), errors.Is(err, fsm.ErrNotFound):
				s.m.leaseFailures.Inc()
				s.m.leaseLost.Inc()
				cancel(fmt.Errorf("%w: vdisk %s during %s: %v", ErrLeaseLost, name, what, err))
				return
			default:
				s.m.leaseFailures.Inc()
				s.log.Warn("lease renewal failed", "vdisk", name, "op", what, "err", err)
			}
		}
	}()
	err = fn(ctx, l.Epoch, v)
	close(stop)
	<-renewed
	if cause := context.Cause(ctx); err != nil && cause != nil && cause != context.Canceled {
		return cause
	}
	return err
}

// Snapshot records the vdisk's head as snapshot snap (O(1)). A vdisk
// attached read-write on this node is committed first, so the snapshot
// holds everything written before the call; one attached on another node
// is snapshotted at its last commit (a FLUSH's commit follows it within
// milliseconds); one whose writer failed has its journal replayed first.
func (s *Service) Snapshot(ctx context.Context, name, snap string) (SnapshotInfo, error) {
	if err := s.settle(ctx, name); err != nil {
		return SnapshotInfo{}, fmt.Errorf("blockd: snapshot %s@%s: %w", name, snap, err)
	}
	sn, err := raft.Apply(ctx, s.cfg.Control, fsm.VDiskSnapshot, fsm.SnapshotArgs{Name: name, Snap: snap})
	if err != nil {
		return SnapshotInfo{}, err
	}
	s.log.Info("snapshot taken", "vdisk", name, "snapshot", snap, "head", sn.Head.Short())
	return snapInfo(sn), nil
}

// Snapshots lists a vdisk's snapshots, oldest first.
func (s *Service) Snapshots(ctx context.Context, name string) ([]SnapshotInfo, error) {
	v, err := s.vdisk(ctx, name)
	if err != nil {
		return nil, err
	}
	return infoOf(v, time.Now()).Snapshots, nil
}

// DeleteSnapshot removes a snapshot (its chunks are collected once no
// other head or snapshot shares them).
func (s *Service) DeleteSnapshot(ctx context.Context, name, snap string) error {
	if err := raft.Exec(ctx, s.cfg.Control, fsm.VDiskSnapshotDelete, fsm.SnapshotArgs{Name: name, Snap: snap}); err != nil {
		return err
	}
	s.log.Info("snapshot deleted", "vdisk", name, "snapshot", snap)
	return nil
}

// Rollback sets the vdisk's head (and size) to a snapshot's. It is refused
// while the vdisk is attached read-write anywhere.
func (s *Service) Rollback(ctx context.Context, name, snap string) (VDiskInfo, error) {
	if d := s.localRW(name); d != nil {
		return VDiskInfo{}, fmt.Errorf("%w: vdisk %s is attached read-write on this node (%s); detach it before rolling back", ErrBusy, name, s.cfg.Node)
	}
	v, err := raft.Apply(ctx, s.cfg.Control, fsm.VDiskRollback, fsm.SnapshotArgs{Name: name, Snap: snap})
	if err != nil {
		return VDiskInfo{}, err
	}
	s.log.Info("vdisk rolled back", "vdisk", name, "snapshot", snap, "head", v.Head.Short())
	return infoOf(v, time.Now()), nil
}

// Clone makes vdisk dst a copy-on-write clone of src@snap (O(1)): its head
// is the snapshot's root. An empty snap clones src's current head, which
// is refused while src is attached read-write. typ "" keeps src's type; a
// cache vdisk can only be cloned to a cache vdisk and the others only to
// non-cache types, because the two classes live in different stores.
func (s *Service) Clone(ctx context.Context, src, snap, dst, typ string) (VDiskInfo, error) {
	if snap == "" {
		if err := s.settle(ctx, src); err != nil {
			return VDiskInfo{}, err
		}
	}
	v, err := s.vdisk(ctx, src)
	if err != nil {
		return VDiskInfo{}, err
	}
	if typ != "" && !sameClass(v.Type, typ) {
		return VDiskInfo{}, invalidf("clone %s -> %s: a %s vdisk cannot be cloned as %s (cache and non-cache vdisks use different stores)", src, dst, v.Type, typ)
	}
	nv, err := raft.Apply(ctx, s.cfg.Control, fsm.VDiskClone, fsm.CloneArgs{Src: src, Snap: snap, New: dst, Type: typ})
	if err != nil {
		return VDiskInfo{}, err
	}
	s.log.Info("vdisk cloned", "vdisk", dst, "from", nv.Parent, "type", nv.Type)
	return infoOf(nv, time.Now()), nil
}

// The JSON shapes of the vdisk API are defined in blockd/vdiskapi.
type (
	VDiskInfo    = vdiskapi.VDiskInfo
	TakeoverInfo = vdiskapi.TakeoverInfo
	SnapshotInfo = vdiskapi.SnapshotInfo
)
