package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
)

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

// Op names: Command.Op in the log, never renamed (old logs and snapshots
// hold them). Callers use the typed descriptors of the same ops (NodeAdd,
// VDiskHead, LeaseAcquire, …, declared with the domain they belong to).
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
