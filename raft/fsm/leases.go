package fsm

// Lease ops: the read-write lease of a vdisk and its fencing epoch.
var (
	// LeaseAcquire gives a node the read-write lease of a vdisk with a new,
	// larger epoch (a takeover when another node's lease lapsed).
	LeaseAcquire = register(OpLeaseAcquire, (*State).applyLeaseAcquire)

	// LeaseRenew extends the lease its holder has, by epoch.
	LeaseRenew = register(OpLeaseRenew, (*State).applyLeaseRenew)

	// LeaseRelease gives the lease up (Clean: the journal needs no replay).
	LeaseRelease = register(OpLeaseRelease, (*State).applyLeaseRelease)
)

// Arguments.
type LeaseArgs struct {
	Name  string `json:"name"`
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch,omitempty"` // renew and release
	TTL   int64  `json:"ttl,omitempty"`   // ns; acquire and renew
	// Journal (acquire): the writer keeps a journal (VDisk.Journaled).
	Journal bool `json:"journal,omitempty"`
	// Clean (release): every acknowledged write is in the head; the
	// journal needs no replay.
	Clean bool `json:"clean,omitempty"`
}

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

func (s *State) applyLeaseAcquire(c *Command, a LeaseArgs) (*Lease, error) {
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

func (s *State) applyLeaseRenew(c *Command, a LeaseArgs) (*Lease, error) {
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

func (s *State) applyLeaseRelease(c *Command, a LeaseArgs) (None, error) {
	v, err := s.vdisk(a.Name)
	if err != nil {
		return None{}, err
	}
	if err := s.checkFence(v, a.Epoch, c.Time); err != nil {
		return None{}, err
	}
	v.Lease = nil
	if a.Clean {
		v.Journaled = false
	}
	return None{}, nil
}
