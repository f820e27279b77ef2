package fsm

import (
	"math"
	"slices"

	"github.com/zosproject/zos/chunkstore"
)

// VDisk ops.
var (
	// VDiskCreate creates a vdisk.
	VDiskCreate = register(OpVDiskCreate, (*State).applyVDiskCreate)

	// VDiskDelete deletes a vdisk that is not attached read-write (unless
	// forced or asked by the lease holder).
	VDiskDelete = register(OpVDiskDelete, (*State).applyVDiskDelete)

	// VDiskResize grows a vdisk, or shrinks it with Force (and a fenced
	// head swap).
	VDiskResize = register(OpVDiskResize, (*State).applyVDiskResize)

	// VDiskHead moves a vdisk's head: a compare-and-swap fenced by the lease
	// epoch.
	VDiskHead = register(OpVDiskHead, (*State).applyVDiskHead)

	// VDiskSnapshot records the current head as a named snapshot.
	VDiskSnapshot = register(OpVDiskSnapshot, (*State).applySnapshot)

	// VDiskSnapshotDelete deletes a snapshot.
	VDiskSnapshotDelete = register(OpVDiskSnapDel, (*State).applySnapshotDelete)

	// VDiskRollback sets a detached vdisk's head back to a snapshot.
	VDiskRollback = register(OpVDiskRollback, (*State).applyRollback)

	// VDiskClone creates a vdisk sharing the chunks of another one (its
	// head, when detached, or one of its snapshots).
	VDiskClone = register(OpVDiskClone, (*State).applyClone)
)

// Arguments.
type (
	VDiskCreateArgs struct {
		Name      string         `json:"name"`
		Size      int64          `json:"size"`
		BlockSize int64          `json:"block_size"`
		Type      string         `json:"type"`
		Pool      string         `json:"pool,omitempty"`
		Head      chunkstore.Ref `json:"head"`
		Parent    string         `json:"parent,omitempty"`
	}
	VDiskDeleteArgs struct {
		Name  string `json:"name"`
		Force bool   `json:"force,omitempty"` // even while attached
		// Epoch, when non-zero, lets the lease holder delete (tmp detach).
		Epoch uint64 `json:"epoch,omitempty"`
	}
	VDiskResizeArgs struct {
		Name  string `json:"name"`
		Size  int64  `json:"size"`
		Force bool   `json:"force,omitempty"` // allow shrinking
		// Shrinking also replaces the head (the truncated tree), fenced
		// by the lease epoch of whoever truncated it.
		Epoch   uint64          `json:"epoch,omitempty"`
		OldHead *chunkstore.Ref `json:"old_head,omitempty"`
		NewHead *chunkstore.Ref `json:"new_head,omitempty"`
	}
	VDiskHeadArgs struct {
		Name  string         `json:"name"`
		Epoch uint64         `json:"epoch"`
		Old   chunkstore.Ref `json:"old"`
		New   chunkstore.Ref `json:"new"`
		// Mark: the new head holds the writer's journal records up to
		// (Epoch, Seq): VDisk.JournalEpoch/JournalSeq move there unless
		// already past it.
		Mark bool   `json:"mark,omitempty"`
		Seq  uint64 `json:"seq,omitempty"`
		// FirstWrite (unix ns): the first write completed under Epoch
		// after a takeover; recorded in VDisk.Takeover once.
		FirstWrite int64 `json:"first_write,omitempty"`
	}
	SnapshotArgs struct {
		Name string `json:"name"`
		Snap string `json:"snap"`
	}
	CloneArgs struct {
		Src  string `json:"src"`
		Snap string `json:"snap"`
		New  string `json:"new"`
		Type string `json:"type,omitempty"`
	}
)

func (s *State) vdisk(name string) (*VDisk, error) {
	v, ok := s.VDisks[name]
	if !ok {
		return nil, errf(ErrNotFound, "no vdisk %q", name)
	}
	return v, nil
}

func checkSize(size, bs int64) error {
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return errf(ErrInvalid, "block size %d: want a power of two from %d to %d", bs, MinBlockSize, MaxBlockSize)
	}
	if size <= 0 || size > MaxVDiskSize {
		return errf(ErrInvalid, "size %d: want 1 byte to 1 PiB", size)
	}
	if size%512 != 0 {
		return errf(ErrInvalid, "size %d is not a multiple of 512", size)
	}
	return nil
}

func checkType(t string) error {
	switch t {
	case VDiskBoot, VDiskDB, VDiskCache, VDiskTmp:
		return nil
	}
	return errf(ErrInvalid, "vdisk type %q: want boot, db, cache or tmp", t)
}

func (s *State) applyVDiskCreate(c *Command, a VDiskCreateArgs) (*VDisk, error) {
	if err := checkName("vdisk", a.Name); err != nil {
		return nil, err
	}
	if _, ok := s.VDisks[a.Name]; ok {
		return nil, errf(ErrExists, "vdisk %s exists", a.Name)
	}
	if err := checkSize(a.Size, a.BlockSize); err != nil {
		return nil, err
	}
	if err := checkType(a.Type); err != nil {
		return nil, err
	}
	if a.Pool == "" {
		a.Pool = DefaultPool
	}
	if _, ok := s.Pools[a.Pool]; !ok {
		return nil, errf(ErrNotFound, "no pool %q", a.Pool)
	}
	v := &VDisk{Name: a.Name, Size: a.Size, BlockSize: a.BlockSize, Type: a.Type, Pool: a.Pool,
		Head: a.Head, Parent: a.Parent, Created: c.Time, Modified: c.Time}
	s.VDisks[a.Name] = v
	return v, nil
}

func (s *State) applyVDiskDelete(c *Command, a VDiskDeleteArgs) (None, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return None{}, err
	}
	if holder := s.leasedBy(v, c.Time); holder != "" && !a.Force && (a.Epoch == 0 || a.Epoch != v.Lease.Epoch) {
		return None{}, errf(ErrLeased, "vdisk %s is attached read-write on node %s; detach it first or use --force", a.Name, holder)
	}
	delete(s.VDisks, a.Name)
	return None{}, nil
}

func (s *State) applyVDiskResize(c *Command, a VDiskResizeArgs) (*VDisk, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if err := checkSize(a.Size, v.BlockSize); err != nil {
		return nil, err
	}
	if a.Size < v.Size {
		if !a.Force {
			return nil, errf(ErrInvalid, "vdisk %s: shrinking from %d to %d bytes discards data; pass --force", a.Name, v.Size, a.Size)
		}
		if a.NewHead != nil {
			if err := s.checkFence(v, a.Epoch, c.Time); err != nil {
				return nil, err
			}
			if a.OldHead == nil || *a.OldHead != v.Head {
				return nil, errf(ErrConflict, "vdisk %s: head moved while shrinking", a.Name)
			}
		}
	}
	if a.NewHead != nil {
		v.Head = *a.NewHead
		v.Generation++
	}
	v.Size = a.Size
	v.Modified = c.Time
	return v, nil
}

func (s *State) applyVDiskHead(c *Command, a VDiskHeadArgs) (*VDisk, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if err := s.checkFence(v, a.Epoch, c.Time); err != nil {
		return nil, err
	}
	if v.Head != a.Old {
		return nil, errf(ErrConflict, "vdisk %s: head is %s, not %s", a.Name, v.Head.Short(), a.Old.Short())
	}
	v.Head = a.New
	v.Generation++
	v.Modified = c.Time
	if a.Mark && (a.Epoch > v.JournalEpoch || a.Epoch == v.JournalEpoch && a.Seq > v.JournalSeq) {
		v.JournalEpoch, v.JournalSeq = a.Epoch, a.Seq
	}
	if t := v.Takeover; a.FirstWrite > 0 && t != nil && t.Epoch == a.Epoch && t.FirstWrite == 0 {
		t.FirstWrite = a.FirstWrite
	}
	return v, nil
}

func (s *State) applySnapshot(c *Command, a SnapshotArgs) (*Snapshot, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if err := checkName("snapshot", a.Snap); err != nil {
		return nil, err
	}
	if v.Snapshot(a.Snap) != nil {
		return nil, errf(ErrExists, "vdisk %s already has a snapshot %s", a.Name, a.Snap)
	}
	if len(v.Snapshots) >= MaxSnapshots {
		return nil, errf(ErrInvalid, "vdisk %s has %d snapshots, the limit", a.Name, MaxSnapshots)
	}
	snap := &Snapshot{Name: a.Snap, Head: v.Head, Size: v.Size, Created: c.Time}
	v.Snapshots = append(v.Snapshots, snap)
	return snap, nil
}

func (s *State) applySnapshotDelete(c *Command, a SnapshotArgs) (None, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return None{}, err
	}
	i := slices.IndexFunc(v.Snapshots, func(sn *Snapshot) bool { return sn.Name == a.Snap })
	if i < 0 {
		return None{}, errf(ErrNotFound, "vdisk %s has no snapshot %q", a.Name, a.Snap)
	}
	v.Snapshots = slices.Delete(v.Snapshots, i, i+1)
	return None{}, nil
}

func (s *State) applyRollback(c *Command, a SnapshotArgs) (*VDisk, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	snap := v.Snapshot(a.Snap)
	if snap == nil {
		return nil, errf(ErrNotFound, "vdisk %s has no snapshot %q", a.Name, a.Snap)
	}
	if holder := s.leasedBy(v, c.Time); holder != "" {
		return nil, errf(ErrLeased, "vdisk %s is attached read-write on node %s; detach it before rolling back", a.Name, holder)
	}
	v.Head, v.Size = snap.Head, snap.Size
	// The journal's records describe the state rolled away from: none may
	// be replayed (later writers have higher epochs).
	v.Journaled = false
	v.JournalEpoch, v.JournalSeq = v.LeaseEpoch, math.MaxUint64
	v.Generation++
	v.Modified = c.Time
	return v, nil
}

func (s *State) applyClone(c *Command, a CloneArgs) (*VDisk, error) {
	src, err := s.vdisk(a.Src)
	if err != nil {
		return nil, err
	}
	if err := checkName("vdisk", a.New); err != nil {
		return nil, err
	}
	if _, ok := s.VDisks[a.New]; ok {
		return nil, errf(ErrExists, "vdisk %s exists", a.New)
	}
	head, size, parent := src.Head, src.Size, a.Src
	if a.Snap != "" {
		snap := src.Snapshot(a.Snap)
		if snap == nil {
			return nil, errf(ErrNotFound, "vdisk %s has no snapshot %q", a.Src, a.Snap)
		}
		head, size, parent = snap.Head, snap.Size, a.Src+"@"+a.Snap
	} else if holder := s.leasedBy(src, c.Time); holder != "" {
		return nil, errf(ErrLeased, "vdisk %s is attached read-write on node %s; clone from a snapshot instead", a.Src, holder)
	}
	typ := a.Type
	if typ == "" {
		typ = src.Type
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	v := &VDisk{Name: a.New, Size: size, BlockSize: src.BlockSize, Type: typ, Pool: src.Pool,
		Head: head, Parent: parent, Created: c.Time, Modified: c.Time}
	s.VDisks[a.New] = v
	return v, nil
}
