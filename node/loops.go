package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

func (n *Node) startLoops() {
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.probeLoop() }()
	go func() { defer n.wg.Done(); n.reportLoop() }()
	go func() { defer n.wg.Done(); n.watchRemoval() }()
}

// probeLoop runs on every node and acts while this node leads: members that
// fail /healthz for DeadAfter are marked down, and up again once they
// answer.
func (n *Node) probeLoop() {
	hc := &http.Client{Timeout: n.cfg.ProbeInterval * 2, Transport: n.peerTransport()}
	lastOK := map[string]time.Time{}
	t := time.NewTicker(n.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if !n.raft.IsLeader() {
			clear(lastOK)
			continue
		}
		var nodes []fsm.Node
		n.raft.ReadStale(func(st *fsm.State) error {
			for _, nd := range st.Nodes {
				if nd.State != fsm.NodeRemoved {
					nodes = append(nodes, *nd)
				}
			}
			return nil
		})
		now := time.Now()
		var mu sync.Mutex
		ok := map[string]bool{n.id: true} // written by the probes below, under mu
		var wg sync.WaitGroup
		for _, nd := range nodes {
			if nd.ID == n.id {
				continue
			}
			wg.Add(1)
			go func(nd fsm.Node) {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(n.ctx, http.MethodGet, n.scheme()+"://"+nd.APIAddr+"/healthz", nil)
				resp, err := hc.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				mu.Lock()
				ok[nd.ID] = err == nil && resp.StatusCode == http.StatusOK
				mu.Unlock()
			}(nd)
		}
		wg.Wait()
		for _, nd := range nodes {
			if _, seen := lastOK[nd.ID]; !seen {
				lastOK[nd.ID] = now // grace period for a new leader
			}
			if ok[nd.ID] {
				lastOK[nd.ID] = now
			}
			var want fsm.NodeState
			switch {
			case ok[nd.ID] && nd.State == fsm.NodeDown:
				want = fsm.NodeUp
			case !ok[nd.ID] && nd.State == fsm.NodeUp && now.Sub(lastOK[nd.ID]) > n.cfg.DeadAfter:
				want = fsm.NodeDown
			default:
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			err := raft.Exec(ctx, n.raft, fsm.NodeSetState, fsm.NodeStateArgs{ID: nd.ID, State: want})
			cancel()
			if err != nil {
				n.log.Warn("could not change node state", "target", nd.ID, "state", want, "err", err)
			} else {
				n.log.Warn("node state changed", "target", nd.ID, "state", want, "silent_for", now.Sub(lastOK[nd.ID]).Round(time.Second))
			}
		}
	}
}

// reportLoop reports the node's disk usage.
func (n *Node) reportLoop() {
	t := time.NewTicker(n.cfg.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		_, used := diskUsage(n.cfg.Dir)
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		err := raft.Exec(ctx, n.raft, fsm.NodeUpdate, fsm.NodeUpdateArgs{ID: n.id, Used: &used})
		cancel()
		if err != nil && n.ctx.Err() == nil {
			n.log.Debug("usage report failed", "err", err)
		}
	}
}

// watchRemoval stops the node when the cluster map says it was removed.
func (n *Node) watchRemoval() {
	for {
		ch := n.raft.Changed()
		removed := false
		n.raft.ReadStale(func(st *fsm.State) error {
			me := st.Nodes[n.id]
			removed = me != nil && me.State == fsm.NodeRemoved
			return nil
		})
		if removed {
			n.log.Warn("this node was removed from the cluster; stopping")
			n.stopSelf(ErrRemoved)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-ch:
		case <-time.After(5 * time.Second):
			// Cut off from the leader (a removed node no longer
			// receives the log): ask the other members.
			if leader, _ := n.raft.Leader(); leader == "" && n.askRemoved() {
				n.log.Warn("the cluster says this node was removed; stopping")
				n.stopSelf(ErrRemoved)
				return
			}
		}
	}
}

// askRemoved asks the other members whether this node was removed.
func (n *Node) askRemoved() bool {
	var peers []string
	var secret string
	n.raft.ReadStale(func(st *fsm.State) error {
		secret = st.Secret
		for _, nd := range st.Nodes {
			if nd.ID != n.id && nd.State != fsm.NodeRemoved {
				peers = append(peers, nd.APIAddr)
			}
		}
		return nil
	})
	for _, p := range peers {
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		me, err := n.peerClient(p, secret).Node(ctx, n.id, true)
		cancel()
		if err == nil {
			return me.State == fsm.NodeRemoved
		}
		if client.IsCode(err, "not_found") {
			return false
		}
	}
	return false
}

// httpForwarder sends raft requests to the leader's internal endpoint.
type httpForwarder struct {
	n    *Node
	once sync.Once
	hc   *http.Client
}

func (f *httpForwarder) Forward(ctx context.Context, to raft.Leader, req *raft.ForwardRequest) (*raft.ForwardResponse, error) {
	f.once.Do(func() {
		f.hc = &http.Client{Transport: f.n.peerTransport()}
	})
	var api, secret string
	f.n.raft.ReadStale(func(st *fsm.State) error {
		if nd := st.Nodes[to.ID]; nd != nil {
			api = nd.APIAddr
		}
		secret = st.Secret
		return nil
	})
	if api == "" || secret == "" {
		return nil, fmt.Errorf("%w: leader %s not in the local cluster map yet", raft.ErrNoLeader, to.ID)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, f.n.scheme()+"://"+api+"/internal/v1/forward", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+secret)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := f.hc.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("raft: forward to leader %s: %w", to.ID, ctx.Err())
		}
		return nil, fmt.Errorf("%w: leader %s unreachable: %v", raft.ErrNoLeader, to.ID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: leader %s answered %s", raft.ErrNoLeader, to.ID, resp.Status)
	}
	var out raft.ForwardResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("raft: forward to %s: bad answer: %w", to.ID, err)
	}
	return &out, nil
}
