package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/resp"
)

// AgentConfig configures the agent benchmark.
type AgentConfig struct {
	Duration time.Duration // per target; default 5s
	Clients  int           // concurrent clients; default 16
	// Binary, when set, is a zos binary: the agent measured is then a real
	// `zos node` process (bootstrapped on a random 127.X.Y.Z in a temporary
	// directory), like the redis-server anchor is a process of its own.
	// Empty: the agent runs inside the benchmark's process.
	Binary string
	Log    io.Writer
}

// AgentResult is one target's figures.
type AgentResult struct {
	Target    string        `json:"target"`
	Clients   int           `json:"clients"`
	Bytes     int           `json:"bytes"` // size of the pushed element
	Ops       int64         `json:"ops"`
	OpsPerSec float64       `json:"ops_per_sec"`
	P50       time.Duration `json:"p50"`
	P99       time.Duration `json:"p99"`
	Errors    int64         `json:"errors"`
	// Ratio is OpsPerSec over the redis-server anchor's.
	Ratio float64 `json:"ratio"`
}

// Agent measures the core.ping round trip of the node agent (RPUSH
// core:default + BRPOPLPUSH on result:<id>, the way 0-core clients wait)
// against a real redis-server doing RPUSH + BLPOP of an element of the
// same size, in the same run, with the same number of go-redis clients.
func Agent(ctx context.Context, cfg AgentConfig, log io.Writer) ([]AgentResult, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Clients == 0 {
		cfg.Clients = 16
	}
	redisPath, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("bench agent needs redis-server as its anchor (apt-get install redis-server): %w", err)
	}
	addr, token, stop, err := startAgent(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer stop()

	// The anchor.
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	rs := exec.CommandContext(ctx, redisPath, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--protected-mode", "no")
	if err := rs.Start(); err != nil {
		return nil, err
	}
	defer func() { rs.Process.Kill(); rs.Wait() }()
	raddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	anchor := redis.NewClient(&redis.Options{Addr: raddr, Protocol: 2, PoolSize: cfg.Clients + 2, DisableIdentity: true})
	defer anchor.Close()
	for deadline := time.Now().Add(20 * time.Second); anchor.Ping(ctx).Err() != nil; {
		if time.Now().After(deadline) {
			return nil, errors.New("redis-server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}

	ac := client.New(addr, token)
	defer ac.Close()
	sample, _ := json.Marshal(agent.Command{ID: client.NewID(), Command: "core.ping"})
	size := len(sample)
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'x'
	}

	redisOp := func(c int) error {
		key := "bench:" + strconv.Itoa(c)
		if err := anchor.RPush(ctx, key, payload).Err(); err != nil {
			return err
		}
		return anchor.BLPop(ctx, 10*time.Second, key).Err()
	}
	agentOp := func(c int) error {
		r, err := ac.Run(ctx, agent.Command{Command: "core.ping"}, 10*time.Second)
		if err == nil && r.State != agent.StateSuccess {
			err = fmt.Errorf("core.ping: %s", r.State)
		}
		return err
	}
	// Interleaved rounds, so a change in the machine's load hits both.
	const rounds = 5
	var redS, agS samples
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		fmt.Fprintf(log, "round %d/%d: redis-server RPUSH+BLPOP, then agent core.ping (RPUSH core:default + BRPOPLPUSH result), %d bytes, %d clients\n",
			i+1, rounds, size, cfg.Clients)
		redS.add(run(ctx, cfg.Clients, cfg.Duration/rounds, redisOp))
		agS.add(run(ctx, cfg.Clients, cfg.Duration/rounds, agentOp))
	}
	red := redS.result("redis-server RPUSH+BLPOP", cfg.Clients, size)
	ag := agS.result("agent core.ping", cfg.Clients, size)
	red.Ratio = 1
	if red.OpsPerSec > 0 {
		ag.Ratio = ag.OpsPerSec / red.OpsPerSec
	}
	return []AgentResult{red, ag}, nil
}

// startAgent starts the agent under test and returns its RESP address.
func startAgent(ctx context.Context, cfg AgentConfig) (addr, token string, stop func(), err error) {
	token = "bench-" + strconv.FormatUint(rand.Uint64(), 16)
	if cfg.Binary == "" {
		// The agent as a node runs it: keyspace, RESP server, job manager.
		ks := resp.NewKeyspace(resp.KeyspaceConfig{})
		m, err := agent.New(agent.Config{Keyspace: ks})
		if err != nil {
			return "", "", nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", nil, err
		}
		srv := resp.New(resp.Config{Auth: func(t string) bool { return t == token }, Handlers: resp.ListHandlers(ks)})
		go srv.Serve(ctx, ln)
		mdone := make(chan struct{})
		go func() { m.Run(ctx); close(mdone) }()
		return ln.Addr().String(), token, func() { srv.Close(); m.Close(); <-mdone; ks.Close() }, nil
	}
	dir, err := os.MkdirTemp("", "zos-bench-agent-")
	if err != nil {
		return "", "", nil, err
	}
	ip := fmt.Sprintf("127.%d.%d.%d", 20+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	cmd := exec.Command(cfg.Binary, "node", "--dir", dir, "--bind", ip, "--bootstrap", "--token", token, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = cfg.Log, cfg.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", "", nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	addr = net.JoinHostPort(ip, "6379")
	c := client.New(addr, token)
	defer c.Close()
	for deadline := time.Now().Add(90 * time.Second); ; {
		if r, err := c.Run(ctx, agent.Command{Command: "core.ping"}, 2*time.Second); err == nil && r.State == agent.StateSuccess {
			return addr, token, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", "", nil, errors.New("the zos node under test did not answer core.ping within 90s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type samples struct {
	ops, errs int64
	elapsed   time.Duration
	lats      []time.Duration
}

func (s *samples) add(o samples) {
	s.ops += o.ops
	s.errs += o.errs
	s.elapsed += o.elapsed
	s.lats = append(s.lats, o.lats...)
}

func (s *samples) result(name string, clients, size int) AgentResult {
	sort.Slice(s.lats, func(a, b int) bool { return s.lats[a] < s.lats[b] })
	q := func(p float64) time.Duration {
		if len(s.lats) == 0 {
			return 0
		}
		return s.lats[min(len(s.lats)-1, int(p*float64(len(s.lats))))]
	}
	r := AgentResult{Target: name, Clients: clients, Bytes: size, Ops: s.ops, P50: q(0.50), P99: q(0.99), Errors: s.errs}
	if s.elapsed > 0 {
		r.OpsPerSec = float64(s.ops) / s.elapsed.Seconds()
	}
	return r
}

func run(ctx context.Context, clients int, d time.Duration, op func(client int) error) samples {
	var ops, errs atomic.Int64
	lats := make([][]time.Duration, clients)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t := time.Now()
				if err := op(c); err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				lats[c] = append(lats[c], time.Since(t))
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	out := samples{ops: ops.Load(), errs: errs.Load(), elapsed: time.Since(start)}
	for _, l := range lats {
		out.lats = append(out.lats, l...)
	}
	return out
}
