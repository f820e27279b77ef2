package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator"
	"github.com/zosproject/zos/orchestrator/client"
)

func status(t *testing.T, c *testcluster.Cluster, i int) (orchestrator.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cs orchestrator.ClusterStatus
	err := c.Get(ctx, i, "/api/v1/cluster", &cs)
	return cs, err
}

func kvPut(ctx context.Context, cl *client.Client, key string) error {
	return cl.Do(ctx, http.MethodPut, "/api/v1/kv/load/"+key, strings.NewReader(key), nil)
}

// TestThreeProcessCluster forms a cluster of three `zos node` processes,
// kills the leader with SIGKILL under a write load, and checks that a new
// leader takes over, that no acknowledged write is lost, and that the
// killed node, restarted on its data dir after the log was compacted,
// catches up from a snapshot.
func TestThreeProcessCluster(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Args: []string{"--raft-snapshot-threshold", "100", "--raft-snapshot-interval", "1s",
		"--raft-heartbeat", "500ms", "--raft-election", "500ms"}})

	out, err := c.CLI(1, "cluster", "status")
	if err != nil {
		t.Fatalf("zos cluster status: %v\n%s", err, out)
	}
	for _, want := range []string{"n1", "n2", "n3", "voter*", "3 up of 3"} {
		if !strings.Contains(out, want) {
			t.Fatalf("cluster status lacks %q:\n%s", want, out)
		}
	}
	out, err = c.CLI(2, "cluster", "nodes", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var nodes []orchestrator.NodeStatus
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 3 {
		t.Fatalf("cluster nodes -o json: %v\n%s", err, out)
	}

	cs, err := status(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	leader := int(cs.LeaderID[1] - '1')
	t.Logf("leader is %s", cs.LeaderID)

	var acked sync.Map
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				// Writers talk to every node, the doomed leader included.
				target := rand.IntN(3)
				key := fmt.Sprintf("w%d-%d", w, i)
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				if kvPut(wctx, c.Client(target), key) == nil {
					acked.Store(key, true)
					n.Add(1)
				}
				wcancel()
			}
		}(w)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		if n.Load() < 300 {
			return fmt.Errorf("%d writes so far", n.Load())
		}
		return nil
	})
	cs, err = status(t, c, leader)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := cs.CommitIndex
	c.Kill(leader)
	before := n.Load()
	testcluster.Eventually(t, 90*time.Second, func() error {
		if n.Load() < before+300 {
			return fmt.Errorf("%d writes after the kill", n.Load()-before)
		}
		// Go on until the survivors compacted their logs past the
		// killed node's position.
		for i := range c.Nodes {
			if i == leader {
				continue
			}
			cs, err := status(t, c, i)
			if err != nil {
				return err
			}
			if cs.FirstIndex <= killedAt+1 {
				return fmt.Errorf("%s log starts at %d, killed node was at %d", c.Nodes[i].ID, cs.FirstIndex, killedAt)
			}
		}
		return nil
	})
	cancel()
	wg.Wait()
	t.Logf("%d acknowledged writes, %d after the leader was killed", n.Load(), n.Load()-before)

	other := (leader + 1) % 3
	cs, err = status(t, c, other)
	if err != nil {
		t.Fatal(err)
	}
	if cs.LeaderID == "" || cs.LeaderID == c.Nodes[leader].ID {
		t.Fatalf("no new leader: %+v", cs)
	}
	check := func(i int, stale bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var entries []orchestrator.KVEntry
		path := "/api/v1/kv/load"
		if stale {
			path += "?stale=true"
		}
		if err := c.Get(ctx, i, path, &entries); err != nil {
			return err
		}
		have := map[string]bool{}
		for _, e := range entries {
			have[e.Key] = true
		}
		missing := 0
		acked.Range(func(k, _ any) bool {
			if !have[k.(string)] {
				missing++
			}
			return true
		})
		if missing > 0 {
			return fmt.Errorf("node %s misses %d of %d acknowledged writes", c.Nodes[i].ID, missing, n.Load())
		}
		return nil
	}
	if err := check(other, false); err != nil {
		t.Fatal(err)
	}
	// Restart the killed leader: it rejoins with its state and catches up
	// (from a snapshot: the log was compacted meanwhile).
	c.Restart(leader)
	c.WaitReady(leader, 60*time.Second)
	testcluster.Eventually(t, 60*time.Second, func() error { return check(leader, true) })
	if err := check(leader, false); err != nil {
		t.Fatal(err)
	}
	logb, _ := os.ReadFile(c.Nodes[leader].Log)
	if !strings.Contains(string(logb), "Installed remote snapshot") {
		t.Fatalf("the restarted node did not catch up from a snapshot (log %s)", c.Nodes[leader].Log)
	}
}

// TestJoinRefusals: a wrong token, a duplicate id and a duplicate address
// each get a clear error and change nothing.
func TestJoinRefusals(t *testing.T) {
	c := testcluster.Start(t, 1, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	epoch := func() uint64 {
		cs, err := status(t, c, 0)
		if err != nil {
			t.Fatal(err)
		}
		return cs.Epoch
	}
	e0 := epoch()

	// Wrong token: the joining process exits with the refusal.
	bad := testcluster.Binary(t)
	out, err := runCmd(ctx, bad, "node", "--id", "x1", "--dir", t.TempDir(), "--bind", c.Base+"9", "--join", c.Nodes[0].IP, "--token", "wrong")
	if err == nil || !strings.Contains(out, "invalid token") {
		t.Fatalf("join with a wrong token: err=%v\n%s", err, out)
	}
	// Duplicate id.
	out, err = runCmd(ctx, bad, "node", "--id", "n1", "--dir", t.TempDir(), "--bind", c.Base+"9", "--join", c.Nodes[0].IP, "--token", c.Token)
	if err == nil || !strings.Contains(out, "already a member") {
		t.Fatalf("join with a duplicate id: err=%v\n%s", err, out)
	}
	// Duplicate address, through the API.
	cl := c.Client(0)
	err = cl.Do(ctx, http.MethodPost, "/api/v1/nodes/join", map[string]any{"node": map[string]any{
		"id": "x2", "addr": c.Nodes[0].IP, "raft_addr": c.Nodes[0].IP + ":19901", "api_addr": c.Nodes[0].IP + ":15000"}}, nil)
	if !client.IsCode(err, "exists") || !strings.Contains(err.Error(), "already used by node n1") {
		t.Fatalf("duplicate address: %v", err)
	}
	// Malformed bodies.
	for _, body := range []string{"", "{", `{"node":{"id":7}}`, `{"node":{},"extra":1}`} {
		err := cl.Do(ctx, http.MethodPost, "/api/v1/nodes/join", strings.NewReader(body), nil)
		if !client.IsCode(err, "invalid") {
			t.Fatalf("malformed join body %q: %v", body, err)
		}
	}
	// No token at all, and a user token on an admin route.
	if err := c.ClientAs(0, "").Do(ctx, http.MethodGet, "/api/v1/cluster", nil, nil); !client.IsCode(err, "unauthorized") {
		t.Fatalf("no token: %v", err)
	}
	var tok orchestrator.CreateTokenResponse
	if err := cl.Do(ctx, http.MethodPost, "/api/v1/tokens", orchestrator.CreateTokenRequest{Name: "bob"}, &tok); err != nil {
		t.Fatal(err)
	}
	if err := c.ClientAs(0, tok.Token).Do(ctx, http.MethodPost, "/api/v1/nodes/join", map[string]any{}, nil); !client.IsCode(err, "forbidden") {
		t.Fatalf("user token joining: %v", err)
	}
	if e := epoch(); e != e0 {
		t.Fatalf("refused joins changed the cluster map (epoch %d -> %d)", e0, e)
	}
	var ns []orchestrator.NodeStatus
	c.Get(ctx, 0, "/api/v1/nodes", &ns)
	if len(ns) != 1 {
		t.Fatalf("nodes after refused joins: %+v", ns)
	}
	// Health needs no token.
	resp, err := c.HTTP().Get(c.APIAddr(0) + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v", err)
	}
	resp.Body.Close()
}

// TestRemoveAndDeadNode: a killed node is marked down after --dead-after,
// then `zos cluster remove` takes it out of Raft and the map; a live node
// that is removed stops on its own.
func TestRemoveAndDeadNode(t *testing.T) {
	c := testcluster.Start(t, 4, testcluster.Options{Args: []string{"--dead-after", "3s"}})
	c.Kill(3)
	testcluster.Eventually(t, 60*time.Second, func() error {
		cs, err := status(t, c, 0)
		if err != nil {
			return err
		}
		for _, n := range cs.Nodes {
			if n.ID == "n4" && n.State != "down" {
				return fmt.Errorf("n4 is %s", n.State)
			}
		}
		return nil
	})
	if out, err := c.CLI(1, "cluster", "remove", "n4"); err != nil {
		t.Fatalf("remove n4: %v\n%s", err, out)
	}
	// Remove a live node: it stops by itself.
	if out, err := c.CLI(0, "cluster", "remove", "n3"); err != nil {
		t.Fatalf("remove n3: %v\n%s", err, out)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		if c.Alive(2) {
			return fmt.Errorf("n3 still runs")
		}
		return nil
	})
	cs, err := status(t, c, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cs.Nodes {
		if (n.ID == "n3" || n.ID == "n4") && (n.State != "removed" || n.Raft != "") {
			t.Fatalf("%s after removal: %+v", n.ID, n)
		}
	}
	// The two remaining nodes still commit.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kvPut(ctx, c.Client(1), "after-removal"); err != nil {
		t.Fatal(err)
	}
	// The leader leaves through its own API (`zos cluster leave` at its
	// address): it hands over, the new leader removes it, and it stops.
	cs, err = status(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	lead := int(cs.LeaderID[1] - '1')
	if out, err := c.CLI(lead, "cluster", "leave"); err != nil || !strings.Contains(out, cs.LeaderID+" left the cluster") {
		t.Fatalf("the leader leaving: %v\n%s", err, out)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		if c.Alive(lead) {
			return fmt.Errorf("%s still runs", cs.LeaderID)
		}
		return nil
	})
	if err := kvPut(ctx, c.Client(1-lead), "alone"); err != nil {
		t.Fatal(err)
	}
}
