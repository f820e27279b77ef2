package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/raft/fsm"
)

// testCluster is N servers in one process over raft's in-memory transport,
// each with its own pebble log in a temp dir.
type testCluster struct {
	t       *testing.T
	mu      sync.Mutex
	servers map[string]*Server
	trans   map[string]*hraft.InmemTransport
	dirs    map[string]string
	base    string // the nodes' dirs are in it
}

type directForwarder struct{ c *testCluster }

func (f directForwarder) Forward(ctx context.Context, to Leader, req *ForwardRequest) (*ForwardResponse, error) {
	f.c.mu.Lock()
	s := f.c.servers[to.ID]
	f.c.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("leader %s unreachable", to.ID)
	}
	// Round-trip through JSON as the HTTP forwarder does.
	b, _ := json.Marshal(req)
	var r2 ForwardRequest
	json.Unmarshal(b, &r2)
	resp := s.HandleForward(ctx, &r2)
	b, _ = json.Marshal(resp)
	var out ForwardResponse
	return &out, json.Unmarshal(b, &out)
}

func newTestCluster(t *testing.T) *testCluster {
	// The base dir first: cleanups run last first, so the servers are
	// closed before it is removed (a node's own TempDir, made later, was
	// removed while a snapshot was being written into it).
	c := &testCluster{t: t, servers: map[string]*Server{}, trans: map[string]*hraft.InmemTransport{}, dirs: map[string]string{}, base: t.TempDir()}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.servers {
			s.Close()
		}
	})
	return c
}

func (c *testCluster) start(id string, bootstrap bool, snapThreshold uint64) *Server {
	c.t.Helper()
	_, tr := hraft.NewInmemTransport(hraft.ServerAddress(id))
	dir, ok := c.dirs[id]
	if !ok {
		dir = filepath.Join(c.base, id)
		if err := os.Mkdir(dir, 0o700); err != nil {
			c.t.Fatal(err)
		}
		c.dirs[id] = dir
	}
	c.mu.Lock()
	for oid, ot := range c.trans {
		if oid == id {
			continue
		}
		tr.Connect(hraft.ServerAddress(oid), ot)
		ot.Connect(hraft.ServerAddress(id), tr)
	}
	c.trans[id] = tr
	c.mu.Unlock()
	s, err := Open(Config{ID: id, Dir: dir, Transport: tr, Bootstrap: bootstrap, Forwarder: directForwarder{c},
		Registerer:       prometheus.NewRegistry(),
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLeaseTimeout: 150 * time.Millisecond,
		SnapshotThreshold: snapThreshold, TrailingLogs: snapThreshold, SnapshotInterval: 200 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.servers[id] = s
	c.mu.Unlock()
	return s
}

func (c *testCluster) stop(id string) {
	c.mu.Lock()
	s := c.servers[id]
	delete(c.servers, id)
	tr := c.trans[id]
	delete(c.trans, id)
	for _, ot := range c.trans {
		ot.Disconnect(hraft.ServerAddress(id))
	}
	c.mu.Unlock()
	tr.DisconnectAll()
	s.Close()
}

func (c *testCluster) leader(ctx context.Context) *Server {
	c.t.Helper()
	for {
		c.mu.Lock()
		for _, s := range c.servers {
			if s.IsLeader() {
				c.mu.Unlock()
				return s
			}
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			c.t.Fatal("no leader elected")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func initCluster(t *testing.T, ctx context.Context, s *Server) {
	t.Helper()
	_, err := s.Apply(ctx, fsm.OpInit, fsm.InitArgs{ClusterID: "test", Secret: "0123456789abcdef-secret",
		Admin: fsm.Token{ID: "admin", Hash: "00000000000000000000000000000000000000000000000000000000000000aa"}})
	if err != nil {
		t.Fatal(err)
	}
}

// threeNodes bootstraps n1 and joins n2, n3 as voters.
func threeNodes(t *testing.T, ctx context.Context, snapThreshold uint64) *testCluster {
	c := newTestCluster(t)
	n1 := c.start("n1", true, snapThreshold)
	if err := n1.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	initCluster(t, ctx, n1)
	for _, id := range []string{"n2", "n3"} {
		c.start(id, false, snapThreshold)
		if err := n1.AddMember(ctx, id, id, true); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func put(ctx context.Context, s *Server, key string) error {
	_, err := s.Apply(ctx, fsm.OpKVPut, fsm.KVPutArgs{NS: "t", Key: key, Value: []byte(key)})
	return err
}

func TestApplyForwardAndRead(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := threeNodes(t, ctx, 0)
	lead := c.leader(ctx)
	var follower *Server
	for _, s := range c.servers {
		if s != lead {
			follower = s
		}
	}
	// A write on a follower is forwarded and its result comes back.
	res, err := follower.Apply(ctx, fsm.OpKVPut, fsm.KVPutArgs{NS: "t", Key: "a", Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	var kv fsm.KV
	if err := json.Unmarshal(res, &kv); err != nil || kv.Version != 1 {
		t.Fatalf("result %s: %v", res, err)
	}
	// A refusal keeps its kind across the forward.
	_, err = follower.Apply(ctx, fsm.OpVDiskDelete, fsm.VDiskDeleteArgs{Name: "nope"})
	if !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("forwarded refusal = %v, want not_found", err)
	}
	// A linearizable read on any node sees every acknowledged write.
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("k%d", i)
		if err := put(ctx, lead, key); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Server{lead, follower} {
			err := s.Read(ctx, func(st *fsm.State) error {
				if st.KV["t"][key] == nil {
					return fmt.Errorf("%s does not see %s", s.ID(), key)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	st := follower.Status()
	if st.LeaderID != lead.ID() || len(st.Members) != 3 || st.AppliedIndex == 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestLeaderFailover kills the leader under a write load: a new leader is
// elected, no acknowledged write is lost, and the old leader, restarted
// after the log was compacted, catches up from a snapshot.
func TestLeaderFailover(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	c := threeNodes(t, ctx, 64)
	old := c.leader(ctx)

	var acked sync.Map
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.mu.Lock()
				var s *Server
				for _, x := range c.servers {
					if x != old {
						s = x
						break
					}
				}
				c.mu.Unlock()
				key := fmt.Sprintf("w%d-%d", w, i)
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := put(wctx, s, key); err == nil {
					acked.Store(key, true)
					n.Add(1)
				}
				cancel()
			}
		}(w)
	}
	waitFor(t, ctx, func() bool { return n.Load() > 200 })
	c.stop(old.ID())
	before := n.Load()
	waitFor(t, ctx, func() bool { return n.Load() > before+300 })
	close(stop)
	wg.Wait()

	lead := c.leader(ctx)
	if lead.ID() == old.ID() {
		t.Fatal("old leader still leads")
	}
	check := func(s *Server) {
		t.Helper()
		err := s.Read(ctx, func(st *fsm.State) error {
			missing := 0
			acked.Range(func(k, _ any) bool {
				if st.KV["t"][k.(string)] == nil {
					missing++
				}
				return true
			})
			if missing > 0 {
				return fmt.Errorf("%s lost %d acknowledged writes", s.ID(), missing)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check(lead)
	// Restart the old leader on its data dir: it rejoins and catches up
	// (the log was compacted past its position, so from a snapshot).
	first, _ := lead.store.FirstIndex()
	if first <= 1 {
		t.Fatalf("log was not compacted (first index %d)", first)
	}
	back := c.start(old.ID(), false, 64)
	waitFor(t, ctx, func() bool { return back.m.applied() >= lead.m.applied() })
	check(back)
	var restored bool
	back.ReadStale(func(st *fsm.State) error { restored = st.ClusterID == "test"; return nil })
	if !restored {
		t.Fatal("restarted node lost cluster identity")
	}
}

func TestMembership(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := threeNodes(t, ctx, 0)
	lead := c.leader(ctx)
	c.start("n4", false, 0)
	if err := lead.AddMember(ctx, "n4", "n4", false); err != nil {
		t.Fatal(err)
	}
	voter := func(id string) bool {
		ms, _ := lead.Members()
		for _, m := range ms {
			if m.ID == id {
				return m.Voter
			}
		}
		t.Fatalf("%s not a member", id)
		return false
	}
	if voter("n4") {
		t.Fatal("n4 should be a non-voter")
	}
	if err := lead.SetVoter(ctx, "n4", true); err != nil || !voter("n4") {
		t.Fatalf("promote: %v", err)
	}
	if err := lead.SetVoter(ctx, "n4", false); err != nil || voter("n4") {
		t.Fatalf("demote: %v", err)
	}
	if err := lead.RemoveMember(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	ms, _ := lead.Members()
	if len(ms) != 3 {
		t.Fatalf("members after remove: %+v", ms)
	}
	// The commit index now points at a configuration entry the state
	// machine never sees; linearizable reads must still return.
	for _, s := range c.servers {
		if s.ID() == "n4" {
			continue // removed: it no longer hears from the leader
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.Read(rctx, func(*fsm.State) error { return nil }); err != nil {
			t.Fatalf("read on %s after a configuration change: %v", s.ID(), err)
		}
		cancel()
	}
	// Followers refuse membership changes with the leader's identity.
	for _, s := range c.servers {
		if s != lead && s.ID() != "n4" {
			err := s.AddMember(ctx, "n9", "n9", true)
			var nl *NotLeaderError
			if !errors.As(err, &nl) || nl.LeaderID != lead.ID() {
				t.Fatalf("follower AddMember = %v", err)
			}
			break
		}
	}
	if err := lead.SetVoter(ctx, "ghost", true); err == nil {
		t.Fatal("promoting a non-member succeeded")
	}
}

// TestMinorityRefusesWrites cuts one node off: it cannot commit, the
// majority goes on, and after healing it converges.
func TestMinorityRefusesWrites(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := threeNodes(t, ctx, 0)
	lead := c.leader(ctx)
	var lone *Server
	for _, s := range c.servers {
		if s != lead {
			lone = s
			break
		}
	}
	c.mu.Lock()
	c.trans[lone.ID()].DisconnectAll()
	for id, tr := range c.trans {
		if id != lone.ID() {
			tr.Disconnect(hraft.ServerAddress(lone.ID()))
		}
	}
	c.mu.Unlock()
	// The isolated node's forwarder can still reach the leader in this
	// harness, so test the local path: it must not commit alone.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := lone.applyLocal(wctx, &proposal{op: fsm.OpKVPut, args: json.RawMessage(`{"ns":"t","key":"lone","value":null}`), id: "lone"})
	cancel()
	if err == nil {
		t.Fatal("isolated node committed a write")
	}
	if err := put(ctx, lead, "majority"); err != nil {
		t.Fatalf("majority write: %v", err)
	}
	// Heal.
	c.mu.Lock()
	for id, tr := range c.trans {
		if id != lone.ID() {
			tr.Connect(hraft.ServerAddress(lone.ID()), c.trans[lone.ID()])
			c.trans[lone.ID()].Connect(hraft.ServerAddress(id), tr)
		}
	}
	c.mu.Unlock()
	waitFor(t, ctx, func() bool {
		ok := false
		lone.ReadStale(func(st *fsm.State) error { ok = st.KV["t"]["majority"] != nil; return nil })
		return ok
	})
	lone.ReadStale(func(st *fsm.State) error {
		if st.KV["t"]["lone"] != nil {
			t.Fatal("uncommitted write of the minority survived")
		}
		return nil
	})
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{}, {ID: "a"}, {ID: "a", Dir: "/tmp/x"}} {
		c.setDefaults()
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached before the deadline")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
