package fsm

import (
	"errors"
	"math"
	"regexp"
	"slices"
	"strings"
)

// Limits on what the control plane accepts.
const (
	MaxVDiskSize  = 1 << 50 // 1 PiB
	MinBlockSize  = 4 << 10
	MaxBlockSize  = 1 << 20
	MaxSnapshots  = 1024
	MaxShards     = 32 // k + m
	MaxKVValue    = 1 << 20
	MaxBatch      = 10000
	DefaultPool   = "default"
	maxNameLength = 128
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

func checkName(kind, s string) error {
	if len(s) == 0 || len(s) > maxNameLength || !nameRE.MatchString(s) {
		return errf(ErrInvalid, "%s name %q: use 1-%d letters, digits, '.', '_' or '-', not starting with '.' or '-'", kind, s, maxNameLength)
	}
	return nil
}

// applyOp applies one command, ignoring its request id. On error the
// State is unchanged.
func (s *State) applyOp(c *Command) (any, error) {
	if c.Op != OpInit && c.Op != OpNoop && s.ClusterID == "" {
		return nil, errf(ErrNotInitialized, "cluster is not initialized; %s refused", c.Op)
	}
	switch c.Op {
	case OpNoop:
		return nil, nil
	case OpInit:
		return s.applyInit(c)
	case OpNodeAdd:
		return s.applyNodeAdd(c)
	case OpNodeUpdate:
		return s.applyNodeUpdate(c)
	case OpNodeState:
		return s.applyNodeState(c)
	case OpNodeRemove:
		return s.applyNodeRemove(c)
	case OpNodeVoter:
		return s.applyNodeVoter(c)
	case OpPoolCreate:
		return s.applyPoolCreate(c)
	case OpPoolDelete:
		return s.applyPoolDelete(c)
	case OpVDiskCreate:
		return s.applyVDiskCreate(c)
	case OpVDiskDelete:
		return s.applyVDiskDelete(c)
	case OpVDiskResize:
		return s.applyVDiskResize(c)
	case OpVDiskHead:
		return s.applyVDiskHead(c)
	case OpVDiskSnapshot:
		return s.applySnapshot(c)
	case OpVDiskSnapDel:
		return s.applySnapshotDelete(c)
	case OpVDiskRollback:
		return s.applyRollback(c)
	case OpVDiskClone:
		return s.applyClone(c)
	case OpLeaseAcquire:
		return s.applyLeaseAcquire(c)
	case OpLeaseRenew:
		return s.applyLeaseRenew(c)
	case OpLeaseRelease:
		return s.applyLeaseRelease(c)
	case OpFlistPut:
		return s.applyFlistPut(c)
	case OpFlistDelete:
		return s.applyFlistDelete(c)
	case OpTokenCreate:
		return s.applyTokenCreate(c)
	case OpTokenDelete:
		return s.applyTokenDelete(c)
	case OpPinAdd:
		return s.applyPinAdd(c)
	case OpPinRemove:
		return s.applyPinRemove(c)
	case OpKVPut:
		return s.applyKVPut(c)
	case OpKVDelete:
		return s.applyKVDelete(c)
	case OpBatch:
		return s.applyBatch(c)
	}
	return nil, errf(ErrUnknownOp, "unknown command %q", c.Op)
}

func (s *State) applyInit(c *Command) (any, error) {
	var a InitArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if s.ClusterID != "" {
		return nil, errf(ErrExists, "cluster %s is already initialized", s.ClusterID)
	}
	if a.ClusterID == "" || len(a.Secret) < 16 {
		return nil, errf(ErrInvalid, "init needs a cluster id and a secret of at least 16 characters")
	}
	if err := checkToken(&a.Admin); err != nil {
		return nil, err
	}
	s.ClusterID, s.Secret, s.Created = a.ClusterID, a.Secret, c.Time
	a.Admin.Created = c.Time
	a.Admin.Role = RoleAdmin
	tok := a.Admin
	s.Tokens[tok.ID] = &tok
	s.Pools[DefaultPool] = &Pool{Name: DefaultPool, Created: c.Time}
	return nil, nil
}

// --- nodes ---

func (s *State) applyNodeAdd(c *Command) (any, error) {
	var a NodeAddArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	n := a.Node
	if err := checkName("node", n.ID); err != nil {
		return nil, err
	}
	if n.Addr == "" || n.RaftAddr == "" || n.APIAddr == "" {
		return nil, errf(ErrInvalid, "node %s: addr, raft_addr and api_addr are required", n.ID)
	}
	if n.Capacity < 0 {
		return nil, errf(ErrInvalid, "node %s: negative capacity", n.ID)
	}
	if old, ok := s.Nodes[n.ID]; ok && old.State != NodeRemoved {
		return nil, errf(ErrExists, "node id %s is already a member (at %s); give the new node another --id", n.ID, old.Addr)
	}
	for _, o := range s.Nodes {
		if o.ID == n.ID || o.State == NodeRemoved {
			continue
		}
		if o.Addr == n.Addr || o.RaftAddr == n.RaftAddr || o.APIAddr == n.APIAddr {
			return nil, errf(ErrExists, "address %s is already used by node %s", n.Addr, o.ID)
		}
	}
	n.State = NodeUp
	n.Joined, n.Changed = c.Time, c.Time
	s.Nodes[n.ID] = &n
	s.Epoch++
	return &n, nil
}

func (s *State) node(id string) (*Node, error) {
	n, ok := s.Nodes[id]
	if !ok {
		return nil, errf(ErrNotFound, "no node %q", id)
	}
	return n, nil
}

func (s *State) applyNodeUpdate(c *Command) (any, error) {
	var a NodeUpdateArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	n, err := s.node(a.ID)
	if err != nil {
		return nil, err
	}
	if (a.Used != nil && *a.Used < 0) || (a.Capacity != nil && *a.Capacity < 0) {
		return nil, errf(ErrInvalid, "node %s: negative size", a.ID)
	}
	mapChange := false
	set := func(dst *string, v *string) {
		if v != nil && *dst != *v {
			*dst = *v
			mapChange = true
		}
	}
	set(&n.Domain, a.Domain)
	set(&n.APIAddr, a.APIAddr)
	set(&n.ShardAddr, a.ShardAddr)
	set(&n.NBDAddr, a.NBDAddr)
	set(&n.RESPAddr, a.RESPAddr)
	if a.Capacity != nil && *a.Capacity != n.Capacity {
		n.Capacity = *a.Capacity
		mapChange = true
	}
	if a.Used != nil {
		n.Used = *a.Used
	}
	if a.Version != nil {
		n.Version = *a.Version
	}
	n.Reported = c.Time
	if mapChange {
		n.Changed = c.Time
		s.Epoch++
	}
	return n, nil
}

func (s *State) applyNodeState(c *Command) (any, error) {
	var a NodeStateArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	n, err := s.node(a.ID)
	if err != nil {
		return nil, err
	}
	switch a.State {
	case NodeUp, NodeDown:
	default:
		return nil, errf(ErrInvalid, "node state %q: want up or down (use node.remove to remove)", a.State)
	}
	if n.State == NodeRemoved {
		return nil, errf(ErrInvalid, "node %s was removed; it must join again", a.ID)
	}
	if n.State != a.State {
		n.State = a.State
		n.Changed = c.Time
		s.Epoch++
	}
	return n, nil
}

func (s *State) applyNodeRemove(c *Command) (any, error) {
	var a NodeIDArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	n, err := s.node(a.ID)
	if err != nil {
		return nil, err
	}
	if n.State != NodeRemoved {
		n.State = NodeRemoved
		n.Voter = false
		n.Changed = c.Time
		s.Epoch++
	}
	// Leases held by a removed node are void.
	for _, v := range s.VDisks {
		if v.Lease != nil && v.Lease.Node == a.ID {
			v.Lease = nil
		}
	}
	return n, nil
}

func (s *State) applyNodeVoter(c *Command) (any, error) {
	var a NodeVoterArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	n, err := s.node(a.ID)
	if err != nil {
		return nil, err
	}
	if n.State == NodeRemoved {
		return nil, errf(ErrInvalid, "node %s was removed", a.ID)
	}
	n.Voter = a.Voter
	n.Changed = c.Time
	return n, nil
}

// --- pools ---

func (s *State) applyPoolCreate(c *Command) (any, error) {
	var a PoolArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if err := checkName("pool", a.Name); err != nil {
		return nil, err
	}
	if _, ok := s.Pools[a.Name]; ok {
		return nil, errf(ErrExists, "pool %s exists", a.Name)
	}
	if a.K < 0 || a.M < 0 || (a.K == 0 && a.M != 0) || a.K+a.M > MaxShards {
		return nil, errf(ErrInvalid, "pool %s: profile %d+%d: want k >= 1, m >= 0, k+m <= %d (or 0+0 for automatic)", a.Name, a.K, a.M, MaxShards)
	}
	if live := s.LiveNodes(); a.K+a.M > live {
		return nil, errf(ErrInvalid, "pool %s: profile %d+%d needs %d nodes, the cluster has %d", a.Name, a.K, a.M, a.K+a.M, live)
	}
	p := &Pool{Name: a.Name, K: a.K, M: a.M, Created: c.Time}
	s.Pools[a.Name] = p
	return p, nil
}

func (s *State) applyPoolDelete(c *Command) (any, error) {
	var a PoolArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if _, ok := s.Pools[a.Name]; !ok {
		return nil, errf(ErrNotFound, "no pool %q", a.Name)
	}
	if a.Name == DefaultPool {
		return nil, errf(ErrInvalid, "the default pool cannot be deleted")
	}
	for _, v := range s.VDisks {
		if v.Pool == a.Name {
			return nil, errf(ErrInvalid, "pool %s still holds vdisk %s", a.Name, v.Name)
		}
	}
	delete(s.Pools, a.Name)
	return nil, nil
}

// --- vdisks ---

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

// leasedBy returns the node holding a live read-write lease, or "".
// LeasedBy returns the node holding v's read-write lease at now (unix ns),
// or "" when there is none: no lease, an expired one, or one of a node
// that is not up.
func (s *State) LeasedBy(v *VDisk, now int64) string { return s.leasedBy(v, now) }

func (s *State) leasedBy(v *VDisk, now int64) string {
	l := v.Lease
	if l == nil || now >= l.Expires {
		return ""
	}
	if n, ok := s.Nodes[l.Node]; ok && n.State != NodeUp {
		return "" // a dead node's lease lapses at once
	}
	return l.Node
}

func (s *State) applyVDiskCreate(c *Command) (any, error) {
	var a VDiskCreateArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

func (s *State) applyVDiskDelete(c *Command) (any, error) {
	var a VDiskDeleteArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if holder := s.leasedBy(v, c.Time); holder != "" && !a.Force && (a.Epoch == 0 || a.Epoch != v.Lease.Epoch) {
		return nil, errf(ErrLeased, "vdisk %s is attached read-write on node %s; detach it first or use --force", a.Name, holder)
	}
	delete(s.VDisks, a.Name)
	return nil, nil
}

func (s *State) applyVDiskResize(c *Command) (any, error) {
	var a VDiskResizeArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

// checkFence requires epoch to be the current lease's epoch.
func (s *State) checkFence(v *VDisk, epoch uint64, now int64) error {
	if v.Lease == nil || v.Lease.Epoch != epoch || epoch == 0 {
		cur := uint64(0)
		if v.Lease != nil {
			cur = v.Lease.Epoch
		}
		return errf(ErrStaleEpoch, "vdisk %s: lease epoch %d is stale (current %d); another node took the vdisk over", v.Name, epoch, cur)
	}
	return nil
}

func (s *State) applyVDiskHead(c *Command) (any, error) {
	var a VDiskHeadArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

func (s *State) applySnapshot(c *Command) (any, error) {
	var a SnapshotArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

func (s *State) applySnapshotDelete(c *Command) (any, error) {
	var a SnapshotArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(v.Snapshots, func(sn *Snapshot) bool { return sn.Name == a.Snap })
	if i < 0 {
		return nil, errf(ErrNotFound, "vdisk %s has no snapshot %q", a.Name, a.Snap)
	}
	v.Snapshots = slices.Delete(v.Snapshots, i, i+1)
	return nil, nil
}

func (s *State) applyRollback(c *Command) (any, error) {
	var a SnapshotArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

func (s *State) applyClone(c *Command) (any, error) {
	var a CloneArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
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

// --- leases ---

func (s *State) applyLeaseAcquire(c *Command) (any, error) {
	var a LeaseArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if a.TTL <= 0 {
		return nil, errf(ErrInvalid, "lease on %s: ttl must be positive", a.Name)
	}
	if a.Node == "" {
		return nil, errf(ErrInvalid, "lease on %s: no node", a.Name)
	}
	if holder := s.leasedBy(v, c.Time); holder != "" && holder != a.Node {
		return nil, errf(ErrLeased, "vdisk %s is attached read-write on node %s; detach it there first, or attach read-only", a.Name, holder)
	}
	v.LeaseEpoch++
	l := &Lease{Node: a.Node, Epoch: v.LeaseEpoch, Expires: c.Time + a.TTL, Granted: c.Time, Renewed: c.Time}
	if old := v.Lease; old != nil {
		// The previous holder never released its lease (it lapsed, its
		// node is down, or its process restarted): a takeover.
		renewed := old.Renewed
		if renewed == 0 {
			renewed = old.Granted
		}
		v.Takeover = &Takeover{From: old.Node, FromEpoch: old.Epoch, LastRenewed: renewed,
			Node: a.Node, Epoch: l.Epoch, Acquired: c.Time}
	}
	v.Lease = l
	if a.Journal {
		v.Journaled = true
	}
	return l, nil
}

func (s *State) applyLeaseRenew(c *Command) (any, error) {
	var a LeaseArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if a.TTL <= 0 {
		return nil, errf(ErrInvalid, "lease on %s: ttl must be positive", a.Name)
	}
	if err := s.checkFence(v, a.Epoch, c.Time); err != nil {
		return nil, err
	}
	if v.Lease.Node != a.Node {
		return nil, errf(ErrStaleEpoch, "vdisk %s: lease belongs to node %s", a.Name, v.Lease.Node)
	}
	v.Lease.Expires = c.Time + a.TTL
	v.Lease.Renewed = c.Time
	l := *v.Lease
	return &l, nil
}

func (s *State) applyLeaseRelease(c *Command) (any, error) {
	var a LeaseArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	v, err := s.vdisk(a.Name)
	if err != nil {
		return nil, err
	}
	if err := s.checkFence(v, a.Epoch, c.Time); err != nil {
		return nil, err
	}
	v.Lease = nil
	if a.Clean {
		v.Journaled = false
	}
	return nil, nil
}

// --- flists ---

func (s *State) applyFlistPut(c *Command) (any, error) {
	var a FlistPutArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	f := a.Flist
	if err := checkName("repository", f.Repo); err != nil {
		return nil, err
	}
	if err := checkName("flist", f.Name); err != nil {
		return nil, err
	}
	if f.Ref.IsZero() || f.Size < 0 {
		return nil, errf(ErrInvalid, "flist %s/%s: needs a ref and a size", f.Repo, f.Name)
	}
	key := f.Repo + "/" + f.Name
	f.Updated = c.Time
	if old, ok := s.Flists[key]; ok {
		f.Created = old.Created
	} else {
		f.Created = c.Time
	}
	s.Flists[key] = &f
	return &f, nil
}

func (s *State) applyFlistDelete(c *Command) (any, error) {
	var a FlistDeleteArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	key := a.Repo + "/" + a.Name
	if _, ok := s.Flists[key]; !ok {
		return nil, errf(ErrNotFound, "no flist %s", key)
	}
	delete(s.Flists, key)
	return nil, nil
}

// --- tokens ---

func checkToken(t *Token) error {
	if err := checkName("token", t.ID); err != nil {
		return err
	}
	if len(t.Hash) != 64 || strings.Trim(t.Hash, "0123456789abcdef") != "" {
		return errf(ErrInvalid, "token %s: hash must be 64 lowercase hex characters", t.ID)
	}
	return nil
}

func (s *State) applyTokenCreate(c *Command) (any, error) {
	var a TokenCreateArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	t := a.Token
	if err := checkToken(&t); err != nil {
		return nil, err
	}
	if t.Role != RoleAdmin && t.Role != RoleUser {
		return nil, errf(ErrInvalid, "token role %q: want admin or user", t.Role)
	}
	if _, ok := s.Tokens[t.ID]; ok {
		return nil, errf(ErrExists, "token %s exists", t.ID)
	}
	for _, o := range s.Tokens {
		if o.Hash == t.Hash {
			return nil, errf(ErrExists, "token already registered as %s", o.ID)
		}
	}
	t.Created = c.Time
	s.Tokens[t.ID] = &t
	return &t, nil
}

func (s *State) applyTokenDelete(c *Command) (any, error) {
	var a TokenDeleteArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	t, ok := s.Tokens[a.ID]
	if !ok {
		return nil, errf(ErrNotFound, "no token %q", a.ID)
	}
	if t.Role == RoleAdmin {
		admins := 0
		for _, o := range s.Tokens {
			if o.Role == RoleAdmin {
				admins++
			}
		}
		if admins == 1 {
			return nil, errf(ErrInvalid, "token %s is the last admin token", a.ID)
		}
	}
	delete(s.Tokens, a.ID)
	return nil, nil
}

// TokenByHash finds a token by the hex SHA-256 of its secret.
func (s *State) TokenByHash(hash string) *Token {
	for _, t := range s.Tokens {
		if t.Hash == hash {
			return t
		}
	}
	return nil
}

// --- batch ---

// applyBatch applies each command in order; each succeeds or fails on its
// own (a batch is a unit of replication, not a transaction).
func (s *State) applyBatch(c *Command) (any, error) {
	var a BatchArgs
	if err := decodeArgs(c, &a); err != nil {
		return nil, err
	}
	if len(a.Cmds) > MaxBatch {
		return nil, errf(ErrInvalid, "batch of %d commands exceeds %d", len(a.Cmds), MaxBatch)
	}
	out := make([]BatchResult, len(a.Cmds))
	for i := range a.Cmds {
		sub := &a.Cmds[i]
		if sub.Op == OpBatch || sub.Op == OpInit {
			out[i].Err = errf(ErrInvalid, "%s is not allowed inside a batch", sub.Op)
			continue
		}
		sub.Time, sub.ID, sub.Seen = c.Time, "", 0
		v, err := s.applyOp(sub)
		out[i].Value = v
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) {
				fe = &Error{Code: "internal", Msg: err.Error()}
			}
			out[i].Err = fe
		}
	}
	return out, nil
}
