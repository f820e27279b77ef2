package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/zosproject/zos/chunkstore"
)

// TestScripts runs the state machine scripts in testdata/*.txt (etcd raft's
// habit): each file starts from a fresh State and applies the commands it
// lists, printing each result. go test -run TestScripts -rewrite
// regenerates the expected output; read the diff before committing it.
//
// Directives:
//
//	cluster nodes=(n1,n2,n3)   a fresh, initialized State with those nodes
//	advance 5s                 move the proposers' clock
//	vdisk name=vm1             print a vdisk as the State holds it now
//	<op> key=value ...         apply an op (cluster.init, vdisk.head, …)
//
// An op's arguments are its JSON fields, written key=value: "ref:x" is the
// Ref of the bytes "x" (printed back as "x"), a duration (10s) is its
// nanoseconds, t+5s the proposers' time 5s after the script's start, an
// integer or true/false is a JSON number or boolean,
// anything else a string; a JSON object as the directive's input is used
// as the arguments instead. req=ID and seen=N set the command's request id
// and Seen. Every op goes through NewCommand, Encode, Decode and
// State.Apply, and a refusal must leave the State as it was.
//
// Times print relative to the script's start (t+5s).
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if filepath.Ext(path) != ".txt" {
			t.Skip("not a script")
		}
		sc := &script{refs: map[chunkstore.Ref]string{}}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return sc.run(t, d)
		})
	})
}

// scriptStart is the proposers' clock when a script starts.
const scriptStart = 1_000 * sec

type script struct {
	s    *State
	now  int64
	refs map[chunkstore.Ref]string // symbolic names of the refs the script made
}

func (sc *script) run(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "cluster":
		var nodes []string
		if a, ok := d.Arg("nodes"); ok {
			nodes = a.Vals
		}
		sc.s, sc.now = NewState(), scriptStart
		sc.mustApply(t, OpInit, fmt.Sprintf(`{"cluster_id":"c1","secret":"0123456789abcdef0123","admin":{"id":"admin","hash":%q}}`, hashOf("a")))
		for i, id := range nodes {
			ip := fmt.Sprintf("127.0.0.%d", i+1)
			sc.mustApply(t, OpNodeAdd, fmt.Sprintf(`{"node":{"id":%q,"addr":%q,"raft_addr":"%s:9901","api_addr":"%s:5000","capacity":1099511627776}}`, id, ip, ip, ip))
		}
		return fmt.Sprintf("cluster c1: %d nodes, epoch %d", len(nodes), sc.s.Epoch)
	case "advance":
		if len(d.CmdArgs) != 1 {
			d.Fatalf(t, "advance takes one duration")
		}
		dur, err := time.ParseDuration(d.CmdArgs[0].Key)
		if err != nil {
			d.Fatalf(t, "advance: %v", err)
		}
		sc.now += int64(dur)
		return "t" + sc.rel(sc.now)
	case "vdisk":
		var name string
		d.ScanArgs(t, "name", &name)
		v := sc.s.VDisks[name]
		if v == nil {
			return "no vdisk " + name
		}
		holder := sc.s.LeasedBy(v, sc.now)
		if holder == "" {
			holder = "none"
		}
		return sc.vdisk(v) + "\nleased by: " + holder
	}
	if sc.s == nil {
		d.Fatalf(t, "%s before cluster", d.Cmd)
	}
	if _, ok := registry[d.Cmd]; !ok && d.Cmd != OpNoop {
		d.Fatalf(t, "unknown directive or op %q", d.Cmd)
	}
	args, id, seen := sc.args(t, d)
	replays := sc.s.Requests.Replays()
	v, err := sc.apply(t, d.Cmd, args, id, seen)
	prefix := ""
	if sc.s.Requests.Replays() != replays {
		prefix = "(answered from the request table) "
	}
	if err != nil {
		var fe *Error
		if !errors.As(err, &fe) {
			d.Fatalf(t, "%s: not an fsm refusal: %v", d.Cmd, err)
		}
		return fmt.Sprintf("%serror %s: %s", prefix, fe.Code, sc.names(fe.Msg))
	}
	if raw, ok := v.(json.RawMessage); ok {
		v = sc.decode(d.Cmd, raw) // a command with a request id answers in JSON
	}
	if v == nil {
		return prefix + "ok"
	}
	return prefix + "ok: " + sc.result(v)
}

// names replaces the short forms of the script's refs in s by their names.
func (sc *script) names(s string) string {
	for r, name := range sc.refs {
		s = strings.ReplaceAll(s, r.Short(), name)
	}
	return strings.ReplaceAll(s, chunkstore.Ref{}.Short(), "none")
}

// args builds the JSON arguments of an op directive.
func (sc *script) args(t *testing.T, d *datadriven.TestData) (args json.RawMessage, id string, seen uint64) {
	obj := map[string]any{}
	for _, a := range d.CmdArgs {
		if len(a.Vals) != 1 {
			d.Fatalf(t, "%s: argument %s wants one value", d.Cmd, a.Key)
		}
		val := a.Vals[0]
		switch a.Key {
		case "req":
			id = val
			continue
		case "seen":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				d.Fatalf(t, "seen=%s: %v", val, err)
			}
			seen = n
			continue
		}
		obj[a.Key] = sc.value(val)
	}
	if in := strings.TrimSpace(d.Input); in != "" {
		if len(obj) > 0 {
			d.Fatalf(t, "%s: arguments both inline and as input", d.Cmd)
		}
		return json.RawMessage(in), id, seen
	}
	b, err := json.Marshal(obj)
	if err != nil {
		d.Fatalf(t, "%s: %v", d.Cmd, err)
	}
	return b, id, seen
}

func (sc *script) value(s string) any {
	if name, ok := strings.CutPrefix(s, "ref:"); ok {
		r := chunkstore.Sum([]byte(name))
		sc.refs[r] = name
		return r.String()
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	if rel, ok := strings.CutPrefix(s, "t+"); ok {
		if dur, err := time.ParseDuration(rel); err == nil {
			return scriptStart + int64(dur) // a proposer time
		}
	}
	if s == "true" || s == "false" {
		return s == "true"
	}
	if dur, err := time.ParseDuration(s); err == nil {
		return int64(dur)
	}
	return s
}

// apply runs one command through the wire form and checks that a refusal
// changed nothing.
func (sc *script) apply(t *testing.T, op string, args json.RawMessage, id string, seen uint64) (any, error) {
	t.Helper()
	c := Command{Op: op, Time: sc.now, Args: args, ID: id, Seen: seen}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if c, err = Decode(b); err != nil {
		t.Fatalf("decode own command: %v", err)
	}
	var before bytes.Buffer
	if err := sc.s.WriteSnapshot(&before); err != nil {
		t.Fatal(err)
	}
	sc.s.Index++
	v, err := sc.s.Apply(&c)
	if err != nil && id == "" {
		var after bytes.Buffer
		sc.s.Index--
		if err := sc.s.WriteSnapshot(&after); err != nil {
			t.Fatal(err)
		}
		sc.s.Index++
		if !bytes.Equal(before.Bytes(), after.Bytes()) {
			t.Errorf("%s failed (%v) but changed the state", op, err)
		}
	}
	return v, err
}

func (sc *script) mustApply(t *testing.T, op, args string) {
	t.Helper()
	if _, err := sc.apply(t, op, json.RawMessage(args), "", 0); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

// decode decodes the JSON result of a command that carried a request id.
func (sc *script) decode(op string, raw json.RawMessage) any {
	var v any
	switch op {
	case OpVDiskHead, OpVDiskCreate, OpVDiskResize, OpVDiskRollback, OpVDiskClone:
		v = new(VDisk)
	case OpLeaseAcquire, OpLeaseRenew:
		v = new(Lease)
	case OpVDiskSnapshot:
		v = new(Snapshot)
	default:
		return raw
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Sprintf("undecodable %s: %v", raw, err)
	}
	return v
}

func (sc *script) result(v any) string {
	switch v := v.(type) {
	case *VDisk:
		return sc.vdisk(v)
	case *Lease:
		return sc.lease(v)
	case *Snapshot:
		return fmt.Sprintf("snapshot %s head=%s size=%d", v.Name, sc.ref(v.Head), v.Size)
	case *Pool:
		return fmt.Sprintf("pool %s %d+%d", v.Name, v.K, v.M)
	case *Node:
		return fmt.Sprintf("node %s state=%s voter=%v (cluster map epoch %d)", v.ID, v.State, v.Voter, sc.s.Epoch)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// rel formats a proposer time relative to the script's start.
func (sc *script) rel(ns int64) string {
	d := time.Duration(ns - scriptStart)
	if d < 0 {
		return d.String()
	}
	return "+" + d.String()
}

func (sc *script) ref(r chunkstore.Ref) string {
	if r.IsZero() {
		return "none"
	}
	if name, ok := sc.refs[r]; ok {
		return name
	}
	return r.Short()
}

func (sc *script) lease(l *Lease) string {
	s := fmt.Sprintf("lease %s epoch=%d granted=t%s", l.Node, l.Epoch, sc.rel(l.Granted))
	if l.Renewed != 0 && l.Renewed != l.Granted {
		s += " renewed=t" + sc.rel(l.Renewed)
	}
	return s + " expires=t" + sc.rel(l.Expires)
}

// vdisk formats what the scripts check of a vdisk, one fact a line.
func (sc *script) vdisk(v *VDisk) string {
	var b strings.Builder
	fmt.Fprintf(&b, "vdisk %s type=%s pool=%s size=%d block_size=%d head=%s generation=%d lease_epoch=%d", v.Name, v.Type, v.Pool, v.Size, v.BlockSize, sc.ref(v.Head), v.Generation, v.LeaseEpoch)
	if v.Parent != "" {
		fmt.Fprintf(&b, " parent=%s", v.Parent)
	}
	if v.Lease != nil {
		b.WriteString("\n  " + sc.lease(v.Lease))
	}
	if v.Journaled || v.JournalEpoch != 0 || v.JournalSeq != 0 {
		seq := strconv.FormatUint(v.JournalSeq, 10)
		if v.JournalSeq == ^uint64(0) {
			seq = "max"
		}
		fmt.Fprintf(&b, "\n  journal: journaled=%v replayed through epoch %d seq %s", v.Journaled, v.JournalEpoch, seq)
	}
	if tk := v.Takeover; tk != nil {
		fmt.Fprintf(&b, "\n  takeover: %s epoch %d (last renewed t%s) -> %s epoch %d at t%s", tk.From, tk.FromEpoch, sc.rel(tk.LastRenewed), tk.Node, tk.Epoch, sc.rel(tk.Acquired))
		if tk.FirstWrite != 0 {
			fmt.Fprintf(&b, ", first write t%s", sc.rel(tk.FirstWrite))
		}
	}
	snaps := append([]*Snapshot(nil), v.Snapshots...)
	sort.Slice(snaps, func(i, j int) bool { return snaps[i].Name < snaps[j].Name })
	for _, sn := range snaps {
		fmt.Fprintf(&b, "\n  snapshot %s head=%s size=%d", sn.Name, sc.ref(sn.Head), sn.Size)
	}
	return b.String()
}
