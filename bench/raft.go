package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/zosproject/zos/node"
	"github.com/zosproject/zos/raft/fsm"
)

// RaftConfig configures the control-plane benchmark.
type RaftConfig struct {
	Duration time.Duration // per mode; default 5s
	Clients  int           // concurrent proposers; default 32
	Batch    int           // commands per batched proposal; default 64
	Dir      string        // default a temp dir
	BaseIP   string        // default a random 127.X.Y.1
}

// RaftResult is one mode's figures.
type RaftResult struct {
	Mode       string        `json:"mode"`
	Clients    int           `json:"clients"`
	Batch      int           `json:"batch"`
	Ops        int64         `json:"ops"`
	OpsPerSec  float64       `json:"ops_per_sec"`
	Proposals  int64         `json:"proposals"`
	P50        time.Duration `json:"p50"`
	P99        time.Duration `json:"p99"`
	P999       time.Duration `json:"p999"`
	Errors     int64         `json:"errors"`
	FromLeader bool          `json:"from_leader"`
}

// Raft measures commits/s and commit latency on a 3-node loopback cluster
// (real TCP transport, pebble log with fsync): single commands, and
// batches of commands per log entry, proposed on the leader and on a
// follower (forwarded).
func Raft(ctx context.Context, cfg RaftConfig, log io.Writer) ([]RaftResult, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Clients == 0 {
		cfg.Clients = 32
	}
	if cfg.Batch == 0 {
		cfg.Batch = 64
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "zos-bench-raft-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	if cfg.BaseIP == "" {
		cfg.BaseIP = fmt.Sprintf("127.%d.%d.1", 20+rand.IntN(200), rand.IntN(250))
	}
	dev, err := node.StartDev(ctx, node.DevConfig{Dir: cfg.Dir, Nodes: 3, BaseIP: cfg.BaseIP})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	var leader, follower *node.Node
	for _, n := range dev.Nodes {
		if n.Raft().IsLeader() {
			leader = n
		} else {
			follower = n
		}
	}
	if leader == nil {
		return nil, fmt.Errorf("bench: no leader")
	}
	var out []RaftResult
	for _, mode := range []struct {
		name   string
		batch  int
		target *node.Node
	}{{"single", 1, leader}, {"batched", cfg.Batch, leader}, {"single-forwarded", 1, follower}} {
		fmt.Fprintf(log, "raft: %s, %d clients, %d commands per proposal, %v…\n", mode.name, cfg.Clients, mode.batch, cfg.Duration)
		r := runRaftMode(ctx, mode.target, cfg.Clients, mode.batch, cfg.Duration)
		r.Mode, r.FromLeader = mode.name, mode.target == leader
		out = append(out, r)
	}
	return out, nil
}

func runRaftMode(ctx context.Context, n *node.Node, clients, batch int, d time.Duration) RaftResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var errs int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var mine []time.Duration
			var bad int64
			for i := 0; ctx.Err() == nil; i++ {
				op, args := fsm.OpKVPut, any(fsm.KVPutArgs{NS: "bench", Key: fmt.Sprintf("c%d-%d", c, i%1000), Value: []byte("v")})
				if batch > 1 {
					cmds := make([]fsm.Command, batch)
					for j := range cmds {
						cmds[j], _ = fsm.NewCommand(fsm.OpKVPut, 0, fsm.KVPutArgs{NS: "bench", Key: fmt.Sprintf("c%d-%d", c, j), Value: []byte("v")})
					}
					op, args = fsm.OpBatch, fsm.BatchArgs{Cmds: cmds}
				}
				t0 := time.Now()
				_, err := n.Raft().Apply(context.Background(), op, args)
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := RaftResult{Clients: clients, Batch: batch, Proposals: int64(len(lat)), Ops: int64(len(lat) * batch), Errors: errs}
	r.OpsPerSec = float64(r.Ops) / el.Seconds()
	if len(lat) > 0 {
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[len(lat)*99/100]
		r.P999 = lat[len(lat)*999/1000]
	}
	return r
}
