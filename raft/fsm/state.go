package fsm

import (
	"sort"

	"github.com/zosproject/zos/chunkstore"
)

// State is the whole replicated control-plane state. Readers get it
// through the raft package's read functions and must not modify it.
type State struct {
	// Cluster identity, set once by OpInit.
	ClusterID string `json:"cluster_id"`
	// Secret authenticates nodes to each other (internal API, shard
	// servers). It is replicated because every node needs it.
	Secret  string `json:"secret"`
	Created int64  `json:"created"`

	// Epoch of the cluster map: bumped whenever a node is added or removed,
	// changes state, address, domain or weight. Placement depends on it.
	Epoch uint64 `json:"epoch"`

	Nodes  map[string]*Node          `json:"nodes"`
	Pools  map[string]*Pool          `json:"pools"`
	VDisks map[string]*VDisk         `json:"vdisks"`
	Flists map[string]*Flist         `json:"flists"` // key: repo/name
	Tokens map[string]*Token         `json:"tokens"` // key: token ID
	Pins   map[chunkstore.Ref]*Pin   `json:"pins"`
	KV     map[string]map[string]*KV `json:"kv"` // namespace -> key

	// Requests remembers recent request ids and their results, so a
	// retried command takes effect once (see Requests). Never nil.
	Requests *Requests `json:"requests,omitempty"`

	// Index is the Raft index of the last applied command; while a
	// command is applied, its own index. It is set by the raft package
	// (before it calls Apply), not by Apply.
	Index uint64 `json:"index"`
}

// NewState returns an empty State.
func NewState() *State {
	return &State{
		Nodes:  map[string]*Node{},
		Pools:  map[string]*Pool{},
		VDisks: map[string]*VDisk{},
		Flists: map[string]*Flist{},
		Tokens: map[string]*Token{},
		Pins:   map[chunkstore.Ref]*Pin{},
		KV:     map[string]map[string]*KV{},

		Requests: newRequests(),
	}
}

// NodeState is where a node is in its life.
type NodeState string

const (
	NodeUp      NodeState = "up"      // serving
	NodeDown    NodeState = "down"    // not answering; its data is rebuilt elsewhere
	NodeRemoved NodeState = "removed" // out of the cluster for good
)

// Node is one member of the cluster map.
type Node struct {
	ID string `json:"id"`
	// Addr is the host address the node binds (e.g. 127.0.0.2).
	Addr      string `json:"addr"`
	RaftAddr  string `json:"raft_addr"`
	APIAddr   string `json:"api_addr"`
	ShardAddr string `json:"shard_addr"`
	NBDAddr   string `json:"nbd_addr"`
	RESPAddr  string `json:"resp_addr"`
	// Domain is the failure domain (rack, host, …); shards of one chunk
	// are spread over domains.
	Domain string `json:"domain"`
	// Capacity is the storage the node offers, in bytes; it is the
	// placement weight. Used is the last reported usage.
	Capacity int64     `json:"capacity"`
	Used     int64     `json:"used"`
	State    NodeState `json:"state"`
	Voter    bool      `json:"voter"`
	Version  string    `json:"version,omitempty"`
	Joined   int64     `json:"joined"`
	Changed  int64     `json:"changed"`
	Reported int64     `json:"reported,omitempty"`
}

// Pool groups data under one erasure-coding profile. K = 0 means "auto":
// the profile follows the cluster size (2+1 for three nodes, 4+2 for six).
type Pool struct {
	Name    string `json:"name"`
	K       int    `json:"k"`
	M       int    `json:"m"`
	Created int64  `json:"created"`
}

// VDisk types, after 0-Disk.
const (
	VDiskBoot  = "boot"  // from an image or snapshot, dedups with it
	VDiskDB    = "db"    // persistent
	VDiskCache = "cache" // not redundant (k+0)
	VDiskTmp   = "tmp"   // deleted when detached
)

// VDisk is one virtual disk.
type VDisk struct {
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
	Type      string `json:"type"`
	Pool      string `json:"pool"`
	// Head is the root of the block tree; the zero Ref is an empty disk.
	Head chunkstore.Ref `json:"head"`
	// Generation counts head updates.
	Generation uint64      `json:"generation"`
	Snapshots  []*Snapshot `json:"snapshots,omitempty"`
	Lease      *Lease      `json:"lease,omitempty"`
	// LeaseEpoch is the last epoch issued; it only grows.
	LeaseEpoch uint64 `json:"lease_epoch"`
	// Journaled: a writer may have acknowledged writes that are only in
	// the vdisk's journal (blockd): set when a lease is granted to a
	// journaling writer, cleared by its clean release and by rollback. A
	// node opening the vdisk replays the journal first.
	Journaled bool `json:"journaled,omitempty"`
	// JournalEpoch and JournalSeq: the head holds every journal record at
	// or before (JournalEpoch, JournalSeq); replay skips those. Only grows.
	JournalEpoch uint64 `json:"journal_epoch,omitempty"`
	JournalSeq   uint64 `json:"journal_seq,omitempty"`
	// Takeover describes the last takeover of the vdisk from a writer
	// that failed (its lease lapsed without a release).
	Takeover *Takeover `json:"takeover,omitempty"`
	// Parent records where a clone came from ("name@snap"), informational.
	Parent   string `json:"parent,omitempty"`
	Created  int64  `json:"created"`
	Modified int64  `json:"modified"`
}

// Snapshot is a named, immutable head.
type Snapshot struct {
	Name    string         `json:"name"`
	Head    chunkstore.Ref `json:"head"`
	Size    int64          `json:"size"`
	Created int64          `json:"created"`
}

// Snapshot returns the named snapshot or nil.
func (v *VDisk) Snapshot(name string) *Snapshot {
	for _, s := range v.Snapshots {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Lease is the right to write a vdisk, held by one node. Epoch is the
// fencing token every head update must carry.
type Lease struct {
	Node    string `json:"node"`
	Epoch   uint64 `json:"epoch"`
	Expires int64  `json:"expires"` // unix ns
	Granted int64  `json:"granted"`
	Renewed int64  `json:"renewed,omitempty"` // last renewal (or the grant)
}

// Takeover is a lease granted after the previous holder's lapsed without a
// release (the holder died or was cut off). The holder failed at most one
// renewal period after LastRenewed; Acquired - LastRenewed and FirstWrite -
// LastRenewed bound how long the vdisk could not be written.
type Takeover struct {
	From        string `json:"from"`
	FromEpoch   uint64 `json:"from_epoch"`
	LastRenewed int64  `json:"last_renewed"` // the failed holder's last renewal (unix ns)
	Node        string `json:"node"`
	Epoch       uint64 `json:"epoch"`
	Acquired    int64  `json:"acquired"`              // the new lease's grant (unix ns)
	FirstWrite  int64  `json:"first_write,omitempty"` // the new holder's first completed write (unix ns)
}

// Flist is one registered flist: repo/name -> the Ref of its file (a blob).
type Flist struct {
	Repo    string            `json:"repo"`
	Name    string            `json:"name"`
	Ref     chunkstore.Ref    `json:"ref"`
	Size    int64             `json:"size"`
	Owner   string            `json:"owner,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Created int64             `json:"created"`
	Updated int64             `json:"updated"`
}

// Token roles. RoleUser is the role of tokens created before operator and
// reader existed; it means what it meant then, which is what operator
// means now (everything but tokens, membership, pools and kv). A token
// whose role is empty (a state older still) is an operator too.
const (
	RoleAdmin    = "admin"    // everything
	RoleOperator = "operator" // vdisks, flists, the store, workloads; no tokens, membership, pools or kv
	RoleReader   = "reader"   // GET only
	RoleUser     = "user"     // legacy: operator
)

// Token is an API token; only the SHA-256 of its secret is stored.
type Token struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Hash string `json:"hash"` // hex sha256 of the full token string
	Role string `json:"role"`
	// Prefixes, if any, limit a non-admin token to the vdisks and flists
	// whose names start with one of them. Absent in entries written
	// before prefixes existed: such a token is not limited.
	Prefixes []string `json:"prefixes,omitempty"`
	Created  int64    `json:"created"`
}

// EffectiveRole is the role t acts with: RoleAdmin, RoleOperator or
// RoleReader (RoleUser and an empty role are RoleOperator).
func (t *Token) EffectiveRole() string {
	switch t.Role {
	case RoleAdmin, RoleReader:
		return t.Role
	}
	return RoleOperator
}

// Pin keeps a blob alive for the garbage collector.
type Pin struct {
	Ref     chunkstore.Ref `json:"ref"`
	Note    string         `json:"note,omitempty"`
	Created int64          `json:"created"`
}

// KV is one value in the generic namespace; Version grows on every write.
type KV struct {
	Value   []byte `json:"value"`
	Version uint64 `json:"version"`
}

// SortedNodes returns the nodes ordered by ID.
func (s *State) SortedNodes() []*Node {
	out := make([]*Node, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SortedVDisks returns the vdisks ordered by name.
func (s *State) SortedVDisks() []*VDisk {
	out := make([]*VDisk, 0, len(s.VDisks))
	for _, v := range s.VDisks {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SortedFlists returns the flists ordered by repo/name.
func (s *State) SortedFlists() []*Flist {
	out := make([]*Flist, 0, len(s.Flists))
	for _, f := range s.Flists {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Repo != out[j].Repo {
			return out[i].Repo < out[j].Repo
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// LiveNodes counts nodes that are not removed.
func (s *State) LiveNodes() int {
	n := 0
	for _, nd := range s.Nodes {
		if nd.State != NodeRemoved {
			n++
		}
	}
	return n
}
