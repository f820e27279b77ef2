package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/zosproject/zos/chunkstore"
)

// MaxCommandSize bounds one encoded command (a batch included).
const MaxCommandSize = 4 << 20

// Command is one entry of the replicated log.
type Command struct {
	Op string `json:"op"`
	// Time is the proposer's clock in unix nanoseconds. Apply uses it for
	// timestamps and lease expiry instead of reading a clock.
	Time int64           `json:"time"`
	Args json.RawMessage `json:"args,omitempty"`
	// ID, when set, names the request the command belongs to: every
	// attempt to commit one request carries the same ID, and the command
	// takes effect at most once however often it reaches the log (see
	// Requests). Commands inside a batch ignore theirs: the batch's ID
	// covers them.
	ID string `json:"id,omitempty"`
	// Seen is the log index the proposer had applied when it first
	// proposed the request: every attempt of it lands after Seen. With ID.
	Seen uint64 `json:"seen,omitempty"`
}

// Ops.
const (
	OpInit          = "cluster.init"
	OpNodeAdd       = "node.add"
	OpNodeUpdate    = "node.update"
	OpNodeState     = "node.state"
	OpNodeRemove    = "node.remove"
	OpNodeVoter     = "node.voter"
	OpPoolCreate    = "pool.create"
	OpPoolDelete    = "pool.delete"
	OpVDiskCreate   = "vdisk.create"
	OpVDiskDelete   = "vdisk.delete"
	OpVDiskResize   = "vdisk.resize"
	OpVDiskHead     = "vdisk.head"
	OpVDiskSnapshot = "vdisk.snapshot"
	OpVDiskSnapDel  = "vdisk.snapshot.delete"
	OpVDiskRollback = "vdisk.rollback"
	OpVDiskClone    = "vdisk.clone"
	OpLeaseAcquire  = "lease.acquire"
	OpLeaseRenew    = "lease.renew"
	OpLeaseRelease  = "lease.release"
	OpFlistPut      = "flist.put"
	OpFlistDelete   = "flist.delete"
	OpTokenCreate   = "token.create"
	OpTokenDelete   = "token.delete"
	OpPinAdd        = "pin.add"
	OpPinRemove     = "pin.remove"
	OpKVPut         = "kv.put"
	OpKVDelete      = "kv.delete"
	OpBatch         = "batch"
	OpNoop          = "noop"
)

// Argument types, one per op.
type (
	InitArgs struct {
		ClusterID string `json:"cluster_id"`
		Secret    string `json:"secret"`
		Admin     Token  `json:"admin"`
	}
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
	PoolArgs struct {
		Name string `json:"name"`
		K    int    `json:"k"`
		M    int    `json:"m"`
	}
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
	LeaseArgs struct {
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
	FlistPutArgs struct {
		Flist Flist `json:"flist"`
	}
	FlistDeleteArgs struct {
		Repo string `json:"repo"`
		Name string `json:"name"`
	}
	TokenCreateArgs struct {
		Token Token `json:"token"`
	}
	TokenDeleteArgs struct {
		ID string `json:"id"`
	}
	PinArgs struct {
		Ref  chunkstore.Ref `json:"ref"`
		Note string         `json:"note,omitempty"`
	}
	KVPutArgs struct {
		NS    string `json:"ns"`
		Key   string `json:"key"`
		Value []byte `json:"value"`
		// IfVersion, when set, makes the write a compare-and-swap: 0
		// means "must not exist".
		IfVersion *uint64 `json:"if_version,omitempty"`
	}
	KVDeleteArgs struct {
		NS        string  `json:"ns"`
		Key       string  `json:"key"`
		IfVersion *uint64 `json:"if_version,omitempty"`
	}
	BatchArgs struct {
		Cmds []Command `json:"cmds"`
	}
)

// BatchResult is one entry of a batch's result.
type BatchResult struct {
	Value any    `json:"value,omitempty"`
	Err   *Error `json:"error,omitempty"`
}

// NewCommand builds a command; time is the proposer's clock (unix ns).
func NewCommand(op string, time int64, args any) (Command, error) {
	c := Command{Op: op, Time: time}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return c, fmt.Errorf("fsm: encode %s: %w", op, err)
		}
		c.Args = b
	}
	return c, nil
}

// Encode returns the wire form of c.
func (c Command) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode: %w", err)
	}
	if len(b) > MaxCommandSize {
		return nil, errf(ErrInvalid, "command %s is %d bytes, more than %d", c.Op, len(b), MaxCommandSize)
	}
	return b, nil
}

// Decode parses the wire form of a command. It checks the envelope only;
// arguments are checked by Apply.
func Decode(b []byte) (Command, error) {
	var c Command
	if len(b) > MaxCommandSize {
		return c, errf(ErrInvalid, "command is %d bytes, more than %d", len(b), MaxCommandSize)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return c, errf(ErrInvalid, "malformed command: %v", err)
	}
	if d.More() {
		return c, errf(ErrInvalid, "malformed command: trailing data")
	}
	if c.Op == "" {
		return c, errf(ErrInvalid, "command has no op")
	}
	return c, nil
}

// decodeArgs strictly decodes c.Args into v.
func decodeArgs(c *Command, v any) error {
	if len(c.Args) == 0 {
		return errf(ErrInvalid, "%s: missing arguments", c.Op)
	}
	d := json.NewDecoder(bytes.NewReader(c.Args))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return errf(ErrInvalid, "%s: bad arguments: %v", c.Op, err)
	}
	if d.More() {
		return errf(ErrInvalid, "%s: bad arguments: trailing data", c.Op)
	}
	return nil
}
