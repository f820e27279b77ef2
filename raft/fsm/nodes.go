package fsm

// Node ops: the cluster map.
var (
	// NodeAdd adds a node (or re-adds a removed one) to the cluster map.
	NodeAdd = register(OpNodeAdd, (*State).applyNodeAdd)

	// NodeUpdate records a node's report: usage, capacity, version and
	// service addresses.
	NodeUpdate = register(OpNodeUpdate, (*State).applyNodeUpdate)

	// NodeSetState marks a node up or down.
	NodeSetState = register(OpNodeState, (*State).applyNodeState)

	// NodeRemove removes a node for good; its leases are void.
	NodeRemove = register(OpNodeRemove, (*State).applyNodeRemove)

	// NodeSetVoter records whether a node is a Raft voter.
	NodeSetVoter = register(OpNodeVoter, (*State).applyNodeVoter)
)

// Arguments.
type (
	NodeAddArgs struct {
		Node Node `json:"node"`
	}
	NodeUpdateArgs struct {
		ID       string  `json:"id"`
		Used     *int64  `json:"used,omitempty"`
		Capacity *int64  `json:"capacity,omitempty"`
		Domain   *string `json:"domain,omitempty"`
		Version  *string `json:"version,omitempty"`
		// Addresses, when set, replace the node's service addresses.
		APIAddr   *string `json:"api_addr,omitempty"`
		ShardAddr *string `json:"shard_addr,omitempty"`
		NBDAddr   *string `json:"nbd_addr,omitempty"`
		RESPAddr  *string `json:"resp_addr,omitempty"`
	}
	NodeStateArgs struct {
		ID    string    `json:"id"`
		State NodeState `json:"state"`
	}
	NodeIDArgs struct {
		ID string `json:"id"`
	}
	NodeVoterArgs struct {
		ID    string `json:"id"`
		Voter bool   `json:"voter"`
	}
)

func (s *State) applyNodeAdd(c *Command, a NodeAddArgs) (*Node, error) {
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

func (s *State) applyNodeUpdate(c *Command, a NodeUpdateArgs) (*Node, error) {
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

func (s *State) applyNodeState(c *Command, a NodeStateArgs) (*Node, error) {
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

func (s *State) applyNodeRemove(c *Command, a NodeIDArgs) (*Node, error) {
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

func (s *State) applyNodeVoter(c *Command, a NodeVoterArgs) (*Node, error) {
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
