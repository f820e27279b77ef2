package fsm

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

const sec = int64(time.Second)

type harness struct {
	t   *testing.T
	s   *State
	now int64
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, s: NewState(), now: 1_000 * sec}
	h.ok(OpInit, InitArgs{ClusterID: "c1", Secret: "0123456789abcdef0123", Admin: Token{ID: "admin", Hash: hashOf("a")}})
	for i, id := range []string{"n1", "n2", "n3"} {
		ip := "127.0.0." + string(rune('1'+i))
		h.ok(OpNodeAdd, NodeAddArgs{Node: Node{ID: id, Addr: ip, RaftAddr: ip + ":9901", APIAddr: ip + ":5000", ShardAddr: ip + ":9900", Capacity: 1 << 40}})
	}
	return h
}

func hashOf(s string) string {
	b := chunkstore.Sum([]byte(s))
	return b.String()
}

// do applies a command and checks that a refusal changed nothing.
func (h *harness) do(op string, args any) (any, error) {
	h.t.Helper()
	c, err := NewCommand(op, h.now, args)
	if err != nil {
		h.t.Fatal(err)
	}
	b, err := c.Encode()
	if err != nil {
		h.t.Fatal(err)
	}
	c, err = Decode(b)
	if err != nil {
		h.t.Fatalf("decode own command: %v", err)
	}
	var before bytes.Buffer
	if err := h.s.WriteSnapshot(&before); err != nil {
		h.t.Fatal(err)
	}
	v, err := h.s.Apply(&c)
	if err != nil {
		var after bytes.Buffer
		h.s.WriteSnapshot(&after)
		if !bytes.Equal(before.Bytes(), after.Bytes()) {
			h.t.Fatalf("%s failed (%v) but changed the state", op, err)
		}
	}
	return v, err
}

func (h *harness) ok(op string, args any) any {
	h.t.Helper()
	v, err := h.do(op, args)
	if err != nil {
		h.t.Fatalf("%s: %v", op, err)
	}
	return v
}

func (h *harness) fails(op string, args any, want *Error) {
	h.t.Helper()
	_, err := h.do(op, args)
	if !errors.Is(err, want) {
		h.t.Fatalf("%s: err = %v, want %s", op, err, want.Code)
	}
	if err.Error() == "" || err.Error() == "fsm: "+want.Code {
		h.t.Fatalf("%s: error without a message: %q", op, err)
	}
}

func TestNotInitialized(t *testing.T) {
	s := NewState()
	c, _ := NewCommand(OpPoolCreate, 1, PoolArgs{Name: "p", K: 1})
	if _, err := s.Apply(&c); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("err = %v", err)
	}
}

func TestInit(t *testing.T) {
	h := newHarness(t)
	h.fails(OpInit, InitArgs{ClusterID: "c2", Secret: "0123456789abcdef0123", Admin: Token{ID: "x", Hash: hashOf("b")}}, ErrExists)
	if h.s.Tokens["admin"].Role != RoleAdmin || h.s.Pools[DefaultPool] == nil {
		t.Fatalf("init did not create admin token and default pool: %+v", h.s)
	}
	s := NewState()
	c, _ := NewCommand(OpInit, 1, InitArgs{ClusterID: "c", Secret: "short", Admin: Token{ID: "a", Hash: hashOf("a")}})
	if _, err := s.Apply(&c); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short secret: %v", err)
	}
}

func TestNodes(t *testing.T) {
	h := newHarness(t)
	if h.s.Epoch != 3 || len(h.s.Nodes) != 3 {
		t.Fatalf("epoch %d nodes %d", h.s.Epoch, len(h.s.Nodes))
	}
	n4 := Node{ID: "n4", Addr: "127.0.0.4", RaftAddr: "127.0.0.4:9901", APIAddr: "127.0.0.4:5000"}
	h.fails(OpNodeAdd, NodeAddArgs{Node: Node{ID: "n1", Addr: "127.0.0.9", RaftAddr: "127.0.0.9:9901", APIAddr: "127.0.0.9:5000"}}, ErrExists)
	dupAddr := n4
	dupAddr.Addr, dupAddr.RaftAddr = "127.0.0.2", "127.0.0.2:9901"
	h.fails(OpNodeAdd, NodeAddArgs{Node: dupAddr}, ErrExists)
	h.fails(OpNodeAdd, NodeAddArgs{Node: Node{ID: "bad id!", Addr: "x", RaftAddr: "x", APIAddr: "x"}}, ErrInvalid)
	h.fails(OpNodeAdd, NodeAddArgs{Node: Node{ID: "n9"}}, ErrInvalid)
	h.ok(OpNodeAdd, NodeAddArgs{Node: n4})
	if h.s.Epoch != 4 || h.s.Nodes["n4"].State != NodeUp || h.s.Nodes["n4"].Joined != h.now {
		t.Fatalf("after add: %+v epoch %d", h.s.Nodes["n4"], h.s.Epoch)
	}

	used := int64(100)
	h.ok(OpNodeUpdate, NodeUpdateArgs{ID: "n4", Used: &used})
	if h.s.Epoch != 4 || h.s.Nodes["n4"].Used != 100 {
		t.Fatal("usage report must not bump the epoch")
	}
	dom := "rack2"
	h.ok(OpNodeUpdate, NodeUpdateArgs{ID: "n4", Domain: &dom})
	if h.s.Epoch != 5 || h.s.Nodes["n4"].Domain != "rack2" {
		t.Fatal("domain change must bump the epoch")
	}
	neg := int64(-1)
	h.fails(OpNodeUpdate, NodeUpdateArgs{ID: "n4", Capacity: &neg}, ErrInvalid)
	h.fails(OpNodeUpdate, NodeUpdateArgs{ID: "nx", Used: &used}, ErrNotFound)

	h.ok(OpNodeState, NodeStateArgs{ID: "n4", State: NodeDown})
	if h.s.Nodes["n4"].State != NodeDown || h.s.Epoch != 6 {
		t.Fatal("state change")
	}
	h.ok(OpNodeState, NodeStateArgs{ID: "n4", State: NodeDown}) // idempotent
	if h.s.Epoch != 6 {
		t.Fatal("no-op state change bumped the epoch")
	}
	h.fails(OpNodeState, NodeStateArgs{ID: "n4", State: "sleepy"}, ErrInvalid)
	h.ok(OpNodeVoter, NodeVoterArgs{ID: "n4", Voter: true})
	if !h.s.Nodes["n4"].Voter {
		t.Fatal("voter")
	}
	h.ok(OpNodeRemove, NodeIDArgs{ID: "n4"})
	if h.s.Nodes["n4"].State != NodeRemoved || h.s.Nodes["n4"].Voter {
		t.Fatal("remove")
	}
	h.fails(OpNodeState, NodeStateArgs{ID: "n4", State: NodeUp}, ErrInvalid)
	h.fails(OpNodeVoter, NodeVoterArgs{ID: "n4", Voter: true}, ErrInvalid)
	h.fails(OpNodeRemove, NodeIDArgs{ID: "zz"}, ErrNotFound)
	// A removed node's id and address may be reused by a new join.
	h.ok(OpNodeAdd, NodeAddArgs{Node: n4})
	if h.s.Nodes["n4"].State != NodeUp {
		t.Fatal("rejoin")
	}
}

func TestPools(t *testing.T) {
	h := newHarness(t)
	h.ok(OpPoolCreate, PoolArgs{Name: "fast", K: 2, M: 1})
	h.fails(OpPoolCreate, PoolArgs{Name: "fast", K: 2, M: 1}, ErrExists)
	h.fails(OpPoolCreate, PoolArgs{Name: "big", K: 4, M: 2}, ErrInvalid) // only 3 nodes
	h.fails(OpPoolCreate, PoolArgs{Name: "neg", K: -1}, ErrInvalid)
	h.fails(OpPoolCreate, PoolArgs{Name: "half", K: 0, M: 1}, ErrInvalid)
	h.ok(OpPoolCreate, PoolArgs{Name: "cache", K: 1, M: 0})
	h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 20, BlockSize: 64 << 10, Type: VDiskDB, Pool: "fast"})
	h.fails(OpPoolDelete, PoolArgs{Name: "fast"}, ErrInvalid)
	h.fails(OpPoolDelete, PoolArgs{Name: DefaultPool}, ErrInvalid)
	h.fails(OpPoolDelete, PoolArgs{Name: "nope"}, ErrNotFound)
	h.ok(OpPoolDelete, PoolArgs{Name: "cache"})
}

func ref(s string) chunkstore.Ref { return chunkstore.Sum([]byte(s)) }

func TestVDiskLifecycle(t *testing.T) {
	h := newHarness(t)
	mk := VDiskCreateArgs{Name: "vm1", Size: 10 << 30, BlockSize: 64 << 10, Type: VDiskBoot}
	h.ok(OpVDiskCreate, mk)
	h.fails(OpVDiskCreate, mk, ErrExists)
	bad := mk
	bad.Name, bad.BlockSize = "x", 3000
	h.fails(OpVDiskCreate, bad, ErrInvalid)
	bad.BlockSize, bad.Size = 4096, 0
	h.fails(OpVDiskCreate, bad, ErrInvalid)
	bad.Size, bad.Type = 4096, "floppy"
	h.fails(OpVDiskCreate, bad, ErrInvalid)
	bad.Type, bad.Pool = VDiskDB, "nopool"
	h.fails(OpVDiskCreate, bad, ErrNotFound)
	bad.Pool, bad.Name = "", "a/b"
	h.fails(OpVDiskCreate, bad, ErrInvalid)
	if v := h.s.VDisks["vm1"]; v.Pool != DefaultPool || !v.Head.IsZero() {
		t.Fatalf("created %+v", v)
	}

	l := h.ok(OpLeaseAcquire, LeaseArgs{Name: "vm1", Node: "n1", TTL: 10 * sec}).(*Lease)
	if l.Epoch != 1 {
		t.Fatalf("first epoch %d", l.Epoch)
	}
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "vm1", Epoch: 1, Old: chunkstore.Ref{}, New: ref("a")})
	h.fails(OpVDiskHead, VDiskHeadArgs{Name: "vm1", Epoch: 1, Old: chunkstore.Ref{}, New: ref("b")}, ErrConflict)
	h.ok(OpVDiskSnapshot, SnapshotArgs{Name: "vm1", Snap: "s1"})
	h.fails(OpVDiskSnapshot, SnapshotArgs{Name: "vm1", Snap: "s1"}, ErrExists)
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "vm1", Epoch: 1, Old: ref("a"), New: ref("b")})
	if v := h.s.VDisks["vm1"]; v.Head != ref("b") || v.Generation != 2 || v.Snapshot("s1").Head != ref("a") {
		t.Fatalf("after writes %+v", v)
	}

	// Rollback and clone-from-head refuse while attached; clone from a
	// snapshot does not.
	h.fails(OpVDiskRollback, SnapshotArgs{Name: "vm1", Snap: "s1"}, ErrLeased)
	h.fails(OpVDiskClone, CloneArgs{Src: "vm1", New: "c0"}, ErrLeased)
	h.ok(OpVDiskClone, CloneArgs{Src: "vm1", Snap: "s1", New: "c1"})
	if c := h.s.VDisks["c1"]; c.Head != ref("a") || c.Parent != "vm1@s1" || c.Type != VDiskBoot || c.Lease != nil {
		t.Fatalf("clone %+v", c)
	}
	h.fails(OpVDiskClone, CloneArgs{Src: "vm1", Snap: "s1", New: "c1"}, ErrExists)
	h.fails(OpVDiskClone, CloneArgs{Src: "vm1", Snap: "nope", New: "c2"}, ErrNotFound)
	h.fails(OpVDiskDelete, VDiskDeleteArgs{Name: "vm1"}, ErrLeased)

	h.ok(OpLeaseRelease, LeaseArgs{Name: "vm1", Node: "n1", Epoch: 1})
	h.ok(OpVDiskRollback, SnapshotArgs{Name: "vm1", Snap: "s1"})
	if h.s.VDisks["vm1"].Head != ref("a") {
		t.Fatal("rollback did not move the head")
	}
	h.fails(OpVDiskRollback, SnapshotArgs{Name: "vm1", Snap: "zz"}, ErrNotFound)
	h.ok(OpVDiskSnapDel, SnapshotArgs{Name: "vm1", Snap: "s1"})
	h.fails(OpVDiskSnapDel, SnapshotArgs{Name: "vm1", Snap: "s1"}, ErrNotFound)

	// Resize: grow freely, shrink only with force.
	h.ok(OpVDiskResize, VDiskResizeArgs{Name: "vm1", Size: 20 << 30})
	h.fails(OpVDiskResize, VDiskResizeArgs{Name: "vm1", Size: 1 << 30}, ErrInvalid)
	h.ok(OpVDiskResize, VDiskResizeArgs{Name: "vm1", Size: 1 << 30, Force: true})
	h.fails(OpVDiskResize, VDiskResizeArgs{Name: "vm1", Size: 1000}, ErrInvalid)
	if h.s.VDisks["vm1"].Size != 1<<30 {
		t.Fatal("resize")
	}
	h.ok(OpVDiskDelete, VDiskDeleteArgs{Name: "vm1"})
	h.fails(OpVDiskDelete, VDiskDeleteArgs{Name: "vm1"}, ErrNotFound)
}

func TestLeaseFencing(t *testing.T) {
	h := newHarness(t)
	h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 30, BlockSize: 4096, Type: VDiskDB})
	l1 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec}).(*Lease)
	// A second read-write attach elsewhere is refused while the lease lives.
	h.fails(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2", TTL: 10 * sec}, ErrLeased)
	h.fails(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2"}, ErrInvalid)
	h.fails(OpLeaseAcquire, LeaseArgs{Name: "zz", Node: "n2", TTL: sec}, ErrNotFound)
	h.now += 5 * sec
	h.ok(OpLeaseRenew, LeaseArgs{Name: "d", Node: "n1", Epoch: l1.Epoch, TTL: 10 * sec})
	h.now += 8 * sec // still within the renewed lease
	h.fails(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2", TTL: 10 * sec}, ErrLeased)
	h.now += 5 * sec // expired
	l2 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2", TTL: 10 * sec}).(*Lease)
	if l2.Epoch <= l1.Epoch {
		t.Fatalf("takeover epoch %d not above %d", l2.Epoch, l1.Epoch)
	}
	// The old holder is fenced: it can neither write the head nor renew.
	h.fails(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l1.Epoch, New: ref("stale")}, ErrStaleEpoch)
	h.fails(OpLeaseRenew, LeaseArgs{Name: "d", Node: "n1", Epoch: l1.Epoch, TTL: sec}, ErrStaleEpoch)
	h.fails(OpLeaseRelease, LeaseArgs{Name: "d", Node: "n1", Epoch: l1.Epoch}, ErrStaleEpoch)
	h.fails(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: 0, New: ref("x")}, ErrStaleEpoch)
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l2.Epoch, New: ref("fresh")})

	// A dead node's lease lapses at once.
	h.ok(OpNodeState, NodeStateArgs{ID: "n2", State: NodeDown})
	l3 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n3", TTL: 10 * sec}).(*Lease)
	if l3.Epoch != l2.Epoch+1 {
		t.Fatalf("epoch %d", l3.Epoch)
	}
	// Re-acquiring by the holder issues a new epoch, fencing its old self.
	l4 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n3", TTL: 10 * sec}).(*Lease)
	h.fails(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l3.Epoch, Old: ref("fresh"), New: ref("y")}, ErrStaleEpoch)
	// Removing the holder voids its lease.
	h.ok(OpNodeRemove, NodeIDArgs{ID: "n3"})
	if h.s.VDisks["d"].Lease != nil {
		t.Fatal("removed node kept its lease")
	}
	h.fails(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l4.Epoch, Old: ref("fresh"), New: ref("y")}, ErrStaleEpoch)
	// The holder may delete its own tmp disk on detach.
	l5 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec}).(*Lease)
	h.fails(OpVDiskDelete, VDiskDeleteArgs{Name: "d", Epoch: l5.Epoch + 7}, ErrLeased)
	h.ok(OpVDiskDelete, VDiskDeleteArgs{Name: "d", Epoch: l5.Epoch})
}

// A lease granted while the previous one was never released records a
// takeover: who failed, its last renewal, and (with the new holder's first
// head commit after a write) its first write. A clean release in between
// is no takeover.
func TestTakeoverRecorded(t *testing.T) {
	h := newHarness(t)
	h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 30, BlockSize: 4096, Type: VDiskDB})
	l1 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec}).(*Lease)
	h.ok(OpLeaseRelease, LeaseArgs{Name: "d", Node: "n1", Epoch: l1.Epoch, Clean: true})
	l2 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec}).(*Lease)
	if h.s.VDisks["d"].Takeover != nil {
		t.Fatal("a lease after a clean release counted as a takeover")
	}
	h.now += 3 * sec
	h.ok(OpLeaseRenew, LeaseArgs{Name: "d", Node: "n1", Epoch: l2.Epoch, TTL: 10 * sec})
	renewed := h.now
	h.now += 11 * sec // n1 died after its renewal; the lease lapsed
	l3 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2", TTL: 10 * sec}).(*Lease)
	tk := h.s.VDisks["d"].Takeover
	want := Takeover{From: "n1", FromEpoch: l2.Epoch, LastRenewed: renewed, Node: "n2", Epoch: l3.Epoch, Acquired: h.now}
	if tk == nil || *tk != want {
		t.Fatalf("takeover %+v, want %+v", tk, want)
	}
	// A commit without a write reports nothing; the one after does, once.
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l3.Epoch, New: ref("a")})
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l3.Epoch, Old: ref("a"), New: ref("b"), FirstWrite: h.now + sec})
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l3.Epoch, Old: ref("b"), New: ref("c"), FirstWrite: h.now + 5*sec})
	if got := h.s.VDisks["d"].Takeover.FirstWrite; got != h.now+sec {
		t.Fatalf("first write %d, want %d", got, h.now+sec)
	}
}

func TestShrinkWithHead(t *testing.T) {
	h := newHarness(t)
	h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 30, BlockSize: 4096, Type: VDiskDB, Head: ref("h0")})
	l := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec}).(*Lease)
	old, nw, wrong := ref("h0"), ref("h1"), ref("zz")
	h.fails(OpVDiskResize, VDiskResizeArgs{Name: "d", Size: 1 << 20, Force: true, Epoch: l.Epoch, OldHead: &wrong, NewHead: &nw}, ErrConflict)
	h.fails(OpVDiskResize, VDiskResizeArgs{Name: "d", Size: 1 << 20, Force: true, Epoch: l.Epoch + 1, OldHead: &old, NewHead: &nw}, ErrStaleEpoch)
	h.ok(OpVDiskResize, VDiskResizeArgs{Name: "d", Size: 1 << 20, Force: true, Epoch: l.Epoch, OldHead: &old, NewHead: &nw})
	if v := h.s.VDisks["d"]; v.Head != nw || v.Size != 1<<20 {
		t.Fatalf("%+v", v)
	}
}

func TestFlists(t *testing.T) {
	h := newHarness(t)
	f := Flist{Repo: "alice", Name: "ubuntu", Ref: ref("f"), Size: 1000}
	h.ok(OpFlistPut, FlistPutArgs{Flist: f})
	created := h.s.Flists["alice/ubuntu"].Created
	h.now += sec
	f.Ref = ref("f2")
	h.ok(OpFlistPut, FlistPutArgs{Flist: f})
	if g := h.s.Flists["alice/ubuntu"]; g.Ref != ref("f2") || g.Created != created || g.Updated != h.now {
		t.Fatalf("%+v", g)
	}
	h.fails(OpFlistPut, FlistPutArgs{Flist: Flist{Repo: "..", Name: "x", Ref: ref("f")}}, ErrInvalid)
	h.fails(OpFlistPut, FlistPutArgs{Flist: Flist{Repo: "a", Name: "x"}}, ErrInvalid)
	h.ok(OpFlistDelete, FlistDeleteArgs{Repo: "alice", Name: "ubuntu"})
	h.fails(OpFlistDelete, FlistDeleteArgs{Repo: "alice", Name: "ubuntu"}, ErrNotFound)
}

func TestTokens(t *testing.T) {
	h := newHarness(t)
	h.ok(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "bob", Name: "bob", Hash: hashOf("bob"), Role: RoleUser}})
	h.fails(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "bob", Hash: hashOf("bob2"), Role: RoleUser}}, ErrExists)
	h.fails(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "b2", Hash: hashOf("bob"), Role: RoleUser}}, ErrExists)
	h.fails(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "b3", Hash: "nothex", Role: RoleUser}}, ErrInvalid)
	h.fails(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "b4", Hash: hashOf("x"), Role: "root"}}, ErrInvalid)
	if tk := h.s.TokenByHash(hashOf("bob")); tk == nil || tk.ID != "bob" {
		t.Fatal("lookup by hash")
	}
	h.fails(OpTokenDelete, TokenDeleteArgs{ID: "admin"}, ErrInvalid) // last admin
	h.ok(OpTokenDelete, TokenDeleteArgs{ID: "bob"})
	h.fails(OpTokenDelete, TokenDeleteArgs{ID: "bob"}, ErrNotFound)
}

func TestPinsAndKV(t *testing.T) {
	h := newHarness(t)
	h.ok(OpPinAdd, PinArgs{Ref: ref("blob"), Note: "backup"})
	h.fails(OpPinAdd, PinArgs{}, ErrInvalid)
	h.ok(OpPinRemove, PinArgs{Ref: ref("blob")})
	h.fails(OpPinRemove, PinArgs{Ref: ref("blob")}, ErrNotFound)

	zero := uint64(0)
	v := h.ok(OpKVPut, KVPutArgs{NS: "orch", Key: "vm/a", Value: []byte("1"), IfVersion: &zero}).(*KV)
	if v.Version != 1 {
		t.Fatal(v.Version)
	}
	h.fails(OpKVPut, KVPutArgs{NS: "orch", Key: "vm/a", Value: []byte("2"), IfVersion: &zero}, ErrConflict)
	one := uint64(1)
	h.ok(OpKVPut, KVPutArgs{NS: "orch", Key: "vm/a", Value: []byte("2"), IfVersion: &one})
	h.fails(OpKVDelete, KVDeleteArgs{NS: "orch", Key: "vm/a", IfVersion: &one}, ErrConflict)
	h.ok(OpKVDelete, KVDeleteArgs{NS: "orch", Key: "vm/a"})
	h.fails(OpKVDelete, KVDeleteArgs{NS: "orch", Key: "vm/a"}, ErrNotFound)
	h.fails(OpKVPut, KVPutArgs{NS: "bad ns", Key: "k"}, ErrInvalid)
	h.fails(OpKVPut, KVPutArgs{NS: "n", Key: ""}, ErrInvalid)
}

func TestBatch(t *testing.T) {
	h := newHarness(t)
	c1, _ := NewCommand(OpPoolCreate, 0, PoolArgs{Name: "p1", K: 1})
	c2, _ := NewCommand(OpPoolCreate, 0, PoolArgs{Name: "p1", K: 1})
	c3, _ := NewCommand(OpBatch, 0, BatchArgs{})
	res := h.ok(OpBatch, BatchArgs{Cmds: []Command{c1, c2, c3}}).([]BatchResult)
	if res[0].Err != nil || !errors.Is(res[1].Err, ErrExists) || !errors.Is(res[2].Err, ErrInvalid) {
		t.Fatalf("%+v", res)
	}
	if h.s.Pools["p1"].Created != h.now {
		t.Fatal("batch time not propagated")
	}
}

func TestMalformed(t *testing.T) {
	h := newHarness(t)
	for _, in := range []string{``, `{`, `[]`, `{"op":""}`, `{"op":"x","bogus":1}`, `{"op":"x"} {"op":"y"}`, `null`} {
		if _, err := Decode([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Decode(%q) = %v, want invalid", in, err)
		}
	}
	h.fails("vdisk.explode", nil, ErrUnknownOp)
	h.fails(OpVDiskCreate, nil, ErrInvalid)
	h.fails(OpVDiskCreate, map[string]any{"name": "x", "surprise": true}, ErrInvalid)
	h.fails(OpVDiskCreate, map[string]any{"name": 7}, ErrInvalid)
	if _, err := Decode(make([]byte, MaxCommandSize+1)); !errors.Is(err, ErrInvalid) {
		t.Error("oversized command accepted")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 30, BlockSize: 4096, Type: VDiskDB, Head: ref("h")})
	h.ok(OpVDiskSnapshot, SnapshotArgs{Name: "d", Snap: "s"})
	h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: sec})
	h.ok(OpFlistPut, FlistPutArgs{Flist: Flist{Repo: "r", Name: "f", Ref: ref("f"), Size: 1, Meta: map[string]string{"entrypoint": "/bin/sh"}}})
	h.ok(OpPinAdd, PinArgs{Ref: ref("p")})
	h.ok(OpKVPut, KVPutArgs{NS: "o", Key: "k", Value: []byte{0, 1, 2}})
	var a bytes.Buffer
	if err := h.s.WriteSnapshot(&a); err != nil {
		t.Fatal(err)
	}
	s2, err := ReadSnapshot(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	s2.WriteSnapshot(&b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("snapshot round trip differs:\n%s\n%s", a.Bytes(), b.Bytes())
	}
	// The restored state keeps working and stays in step with the original.
	h2 := &harness{t: t, s: s2, now: h.now}
	h.ok(OpVDiskSnapshot, SnapshotArgs{Name: "d", Snap: "s2"})
	h2.ok(OpVDiskSnapshot, SnapshotArgs{Name: "d", Snap: "s2"})
	a.Reset()
	b.Reset()
	h.s.WriteSnapshot(&a)
	h2.s.WriteSnapshot(&b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("restored state diverged")
	}
	if c := h.s.Clone(); c.VDisks["d"] == h.s.VDisks["d"] || c.VDisks["d"].Head != ref("h") {
		t.Fatal("Clone is not deep")
	}
	for _, bad := range []string{"", "{}", `{"version":9,"state":{}}`, `{"version":1}`, "garbage"} {
		if _, err := ReadSnapshot(bytes.NewReader([]byte(bad))); err == nil {
			t.Errorf("ReadSnapshot(%q) accepted", bad)
		}
	}
}

// FuzzApply decodes arbitrary bytes as a command and applies it to a
// populated state: it must never panic, and a refusal must change nothing.
func FuzzApply(f *testing.F) {
	seed := func(op string, args any) {
		c, _ := NewCommand(op, 5, args)
		b, _ := c.Encode()
		f.Add(b)
	}
	seed(OpVDiskCreate, VDiskCreateArgs{Name: "n", Size: 4096, BlockSize: 4096, Type: VDiskDB})
	seed(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: 1})
	seed(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2", TTL: 1})
	seed(OpNodeAdd, NodeAddArgs{Node: Node{ID: "x", Addr: "a", RaftAddr: "b", APIAddr: "c"}})
	seed(OpKVPut, KVPutArgs{NS: "a", Key: "b"})
	seed(OpVDiskClone, CloneArgs{Src: "d", Snap: "s", New: "e"})
	c1, _ := NewCommand(OpPoolCreate, 0, PoolArgs{Name: "p", K: 1})
	seed(OpBatch, BatchArgs{Cmds: []Command{c1}})
	f.Add([]byte(`{"op":"vdisk.resize","args":{"name":"d","size":-1}}`))
	f.Add([]byte(`{"op":"kv.put","time":7,"args":{"ns":"a","key":"b","if_version":3},"id":"r","seen":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := newHarness(&testing.T{})
		h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 30, BlockSize: 4096, Type: VDiskDB})
		h.ok(OpVDiskSnapshot, SnapshotArgs{Name: "d", Snap: "s"})
		h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: sec})
		c, err := Decode(b)
		if err != nil {
			return
		}
		var before, after bytes.Buffer
		// The request table remembers refusals too: compare the rest.
		content := func(w *bytes.Buffer) {
			req := h.s.Requests
			h.s.Requests = nil
			h.s.WriteSnapshot(w)
			h.s.Requests = req
		}
		content(&before)
		if _, err := h.s.Apply(&c); err != nil {
			content(&after)
			if !bytes.Equal(before.Bytes(), after.Bytes()) {
				t.Fatalf("refused command %s changed the state", b)
			}
			return
		}
		after.Reset()
		// Whatever was accepted still snapshots and restores.
		h.s.WriteSnapshot(&after)
		if _, err := ReadSnapshot(&after); err != nil {
			t.Fatalf("state after %s does not restore: %v", b, err)
		}
	})
}

// The journal state of a vdisk: a journaling writer marks it, head commits
// move the mark forward only, a clean release clears it, and a rollback
// discards every record so far.
func TestJournalMark(t *testing.T) {
	h := newHarness(t)
	h.ok(OpVDiskCreate, VDiskCreateArgs{Name: "d", Size: 1 << 30, BlockSize: 4096, Type: VDiskDB})
	h.ok(OpVDiskSnapshot, SnapshotArgs{Name: "d", Snap: "s0"})
	l1 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec, Journal: true}).(*Lease)
	v := h.s.VDisks["d"]
	if !v.Journaled {
		t.Fatal("a journaling writer's lease does not mark the vdisk")
	}
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l1.Epoch, New: ref("a"), Mark: true, Seq: 10})
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l1.Epoch, Old: ref("a"), New: ref("b"), Mark: true, Seq: 7})
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l1.Epoch, Old: ref("b"), New: ref("c"), Seq: 20})
	if v.JournalEpoch != l1.Epoch || v.JournalSeq != 10 {
		t.Fatalf("mark (%d, %d), want (%d, 10): it must only grow, and only when asked", v.JournalEpoch, v.JournalSeq, l1.Epoch)
	}
	// An unclean release (and a lease without a journal) keep the mark.
	h.ok(OpLeaseRelease, LeaseArgs{Name: "d", Node: "n1", Epoch: l1.Epoch})
	l2 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n1", TTL: 10 * sec}).(*Lease)
	if !v.Journaled {
		t.Fatal("the journaled mark was lost before a replay")
	}
	h.ok(OpLeaseRelease, LeaseArgs{Name: "d", Node: "n1", Epoch: l2.Epoch, Clean: true})
	if v.Journaled {
		t.Fatal("a clean release left the vdisk journaled")
	}
	l3 := h.ok(OpLeaseAcquire, LeaseArgs{Name: "d", Node: "n2", TTL: 10 * sec, Journal: true}).(*Lease)
	// A new writer marks (epoch, 0) after its replay: older records are
	// never replayed again, its own all are.
	h.ok(OpVDiskHead, VDiskHeadArgs{Name: "d", Epoch: l3.Epoch, Old: ref("c"), New: ref("c"), Mark: true})
	if v.JournalEpoch != l3.Epoch || v.JournalSeq != 0 {
		t.Fatalf("mark (%d, %d) after a new writer's replay, want (%d, 0)", v.JournalEpoch, v.JournalSeq, l3.Epoch)
	}
	h.ok(OpLeaseRelease, LeaseArgs{Name: "d", Node: "n2", Epoch: l3.Epoch})
	h.ok(OpVDiskRollback, SnapshotArgs{Name: "d", Snap: "s0"})
	if v.Journaled || v.JournalEpoch != l3.Epoch || v.JournalSeq != math.MaxUint64 {
		t.Fatalf("after rollback: journaled %v, mark (%d, %d): every record must be discarded", v.Journaled, v.JournalEpoch, v.JournalSeq)
	}
}

// TestTokenRoles: the new roles and prefixes, and entries in the format
// written before them (role "user", no prefixes field; a state whose
// token has no role at all) decode and keep their meaning: operator.
func TestTokenRoles(t *testing.T) {
	h := newHarness(t)
	h.ok(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "op", Name: "op", Hash: hashOf("op"), Role: RoleOperator, Prefixes: []string{"vm-", "tmpl-"}}})
	h.ok(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "rd", Name: "rd", Hash: hashOf("rd"), Role: RoleReader}})
	h.ok(OpTokenCreate, TokenCreateArgs{Token: Token{ID: "e", Name: "e", Hash: hashOf("e"), Role: RoleReader, Prefixes: []string{}}})
	if p := h.s.Tokens["op"].Prefixes; len(p) != 2 || p[0] != "vm-" {
		t.Fatalf("prefixes: %q", p)
	}
	if h.s.Tokens["e"].Prefixes != nil {
		t.Fatal("an empty prefix list is stored as none")
	}
	for _, bad := range []Token{
		{ID: "b1", Hash: hashOf("b1"), Role: RoleAdmin, Prefixes: []string{"vm-"}},
		{ID: "b2", Hash: hashOf("b2"), Role: RoleOperator, Prefixes: []string{""}},
		{ID: "b3", Hash: hashOf("b3"), Role: RoleOperator, Prefixes: []string{"-x"}},
		{ID: "b4", Hash: hashOf("b4"), Role: RoleOperator, Prefixes: []string{"a/b"}},
		{ID: "b5", Hash: hashOf("b5"), Role: RoleOperator, Prefixes: []string{"a", "a"}},
		{ID: "b6", Hash: hashOf("b6"), Role: RoleOperator, Prefixes: make([]string, MaxTokenPrefixes+1)},
		{ID: "b7", Hash: hashOf("b7"), Role: ""},
	} {
		h.fails(OpTokenCreate, TokenCreateArgs{Token: bad}, ErrInvalid)
	}

	// A token.create entry as the log held it before roles grew.
	raw := `{"op":"token.create","time":5,"args":{"token":{"id":"old","name":"old","hash":"` + hashOf("old") + `","role":"user","created":0}}}`
	c, err := Decode([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.Apply(&c); err != nil {
		t.Fatalf("old token.create entry: %v", err)
	}
	old := h.s.Tokens["old"]
	if old == nil || old.Role != RoleUser || old.EffectiveRole() != RoleOperator || old.Prefixes != nil {
		t.Fatalf("old token: %+v", old)
	}
	for id, want := range map[string]string{"admin": RoleAdmin, "op": RoleOperator, "rd": RoleReader} {
		if got := h.s.Tokens[id].EffectiveRole(); got != want {
			t.Errorf("token %s acts as %s, want %s", id, got, want)
		}
	}

	// A snapshot with a token that has no role field at all.
	var buf bytes.Buffer
	if err := h.s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(buf.String(), `"role":"user",`, ``, 1)
	if doc == buf.String() {
		t.Fatal("test setup: no role to strip")
	}
	s2, err := ReadSnapshot(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("snapshot without a role: %v", err)
	}
	if tk := s2.Tokens["old"]; tk.Role != "" || tk.EffectiveRole() != RoleOperator {
		t.Fatalf("roleless token: %+v acts as %s", tk, tk.EffectiveRole())
	}
}
