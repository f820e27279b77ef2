// Package testcluster runs real multi-process zos clusters for tests: it
// builds the zos binary once per test binary, starts `zos node` processes
// on their own loopback addresses (a fresh /24 of the block loopback gives
// testcluster, so clusters never share the default ports with each other or
// with another package's tests),
// and kills every process it started when the test ends.
//
// Beside it, for in-process tests: loopback hands each test package a
// 127.0.N.0/24 of its own, and wait is the one polling helper.
package testcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/invariants"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/orchestrator/client"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/zos once and returns the path of the binary (with the
// invariants build tag when the test binary has it).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "zos-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "zos")
		args := []string{"build", "-o", binPath}
		if invariants.Enabled {
			// The nodes check their invariants too (see internal/invariants).
			args = append(args, "-tags", "invariants")
		}
		cmd := exec.Command("go", append(args, "./cmd/zos")...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/zos: %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Options tune a cluster.
type Options struct {
	// Args are extra flags for every `zos node`.
	Args []string
	// NodeArgs returns extra flags for node i (0-based).
	NodeArgs func(i int) []string
	// Wrap, when set, returns the command prefix a node runs under (for
	// example ip netns exec NS) and the IP it binds.
	Wrap func(i int) (prefix []string, ip string)
	// NoTLS starts the nodes with --tls=false (plaintext). By default the
	// cluster runs TLS: the CA is node 1's DIR/tls/ca.pem (CAFile), the
	// others join with --cacert, and Client, CLI and HTTP trust it.
	NoTLS bool
}

// Cluster is a set of node processes.
type Cluster struct {
	t     testing.TB
	Bin   string
	Token string
	Base  string // "127.X.Y."
	Nodes []*Proc
	opts  Options
	dir   string
}

// Proc is one `zos node` process.
type Proc struct {
	ID   string
	IP   string
	Dir  string
	Log  string
	args []string
	wrap []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts n nodes: node 0 bootstraps, the others join it.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Bin: Binary(t), Token: "zos_test_" + fmt.Sprint(rand.Int64()), opts: opts,
		Base: loopback.Fresh("internal/testcluster")}
	c.dir = t.TempDir() // before KillAll, so logs outlive the nodes
	if keep := os.Getenv("ZOS_TEST_KEEP"); keep != "" {
		// Post-mortems: the nodes' directories and logs stay in $ZOS_TEST_KEEP.
		var err error
		if c.dir, err = os.MkdirTemp(keep, "cluster-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("nodes' directories and logs kept in %s", c.dir)
	}
	t.Cleanup(c.KillAll)
	for i := 0; i < n; i++ {
		c.Add(t)
		if i == 0 {
			c.WaitReady(0, 60*time.Second)
		}
	}
	for i := range c.Nodes {
		c.WaitReady(i, 90*time.Second)
	}
	return c
}

// Add starts one more node that joins the cluster through node 0.
func (c *Cluster) Add(t testing.TB) *Proc {
	i := len(c.Nodes)
	ip := c.Base + fmt.Sprint(i+1)
	var wrap []string
	if c.opts.Wrap != nil {
		wrap, ip = c.opts.Wrap(i)
	}
	p := &Proc{ID: fmt.Sprintf("n%d", i+1), IP: ip, Dir: filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)), wrap: wrap}
	p.Log = p.Dir + ".log"
	p.args = []string{"node", "--id", p.ID, "--dir", p.Dir, "--bind", ip, "--token", c.Token, "--log-level", "debug"}
	if c.opts.NoTLS {
		p.args = append(p.args, "--tls=false")
	}
	if i == 0 {
		p.args = append(p.args, "--bootstrap")
	} else {
		p.args = append(p.args, "--join", c.Nodes[0].IP)
		if !c.opts.NoTLS {
			p.args = append(p.args, "--cacert", c.CAFile())
		}
	}
	p.args = append(p.args, c.opts.Args...)
	if c.opts.NodeArgs != nil {
		p.args = append(p.args, c.opts.NodeArgs(i)...)
	}
	c.Nodes = append(c.Nodes, p)
	c.start(p)
	return p
}

func (c *Cluster) start(p *Proc) {
	c.t.Helper()
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	argv := append(append([]string{}, p.wrap...), c.Bin)
	argv = append(argv, p.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// Args returns the command-line arguments of the node (after "zos").
func (p *Proc) Args() []string { return append([]string(nil), p.args...) }

// SetArgs replaces the arguments used at the next Restart.
func (p *Proc) SetArgs(args []string) { p.args = args }

// Kill sends SIGKILL to node i and waits for it to die.
func (c *Cluster) Kill(i int) { c.signal(i, syscall.SIGKILL) }

// Stop sends SIGTERM to node i and waits for a graceful exit.
func (c *Cluster) Stop(i int) { c.signal(i, syscall.SIGTERM) }

func (c *Cluster) signal(i int, sig syscall.Signal) {
	p := c.Nodes[i]
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	p.mu.Lock()
	p.cmd = nil
	p.mu.Unlock()
}

// Alive reports whether node i's process runs.
func (c *Cluster) Alive(i int) bool {
	p := c.Nodes[i]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Restart starts node i again on its data dir.
func (c *Cluster) Restart(i int) {
	c.start(c.Nodes[i])
}

// KillAll kills every node (test cleanup).
func (c *Cluster) KillAll() {
	for i := range c.Nodes {
		c.Kill(i)
	}
	if c.t.Failed() {
		for _, p := range c.Nodes {
			b, _ := os.ReadFile(p.Log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			c.t.Logf("---- log tail of %s (%s) ----\n%s", p.ID, p.Log, b)
		}
	}
}

// APIAddr returns node i's API URL.
func (c *Cluster) APIAddr(i int) string { return c.Scheme() + "://" + c.Nodes[i].IP + ":5000" }

// Scheme of the nodes' API: https, or http with Options.NoTLS.
func (c *Cluster) Scheme() string {
	if c.opts.NoTLS {
		return "http"
	}
	return "https"
}

// TLS reports whether the cluster runs TLS.
func (c *Cluster) TLS() bool { return !c.opts.NoTLS }

// CAFile is the cluster CA certificate (node 1's; "" with NoTLS).
func (c *Cluster) CAFile() string {
	if c.opts.NoTLS {
		return ""
	}
	return filepath.Join(c.Nodes[0].Dir, "tls", "ca.pem")
}

// TLSConfig trusts the cluster CA (nil with NoTLS, or before node 1
// wrote it).
func (c *Cluster) TLSConfig() *tls.Config {
	if c.opts.NoTLS {
		return nil
	}
	b, err := os.ReadFile(c.CAFile())
	if err != nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return &tls.Config{RootCAs: pool}
}

// HTTP is an HTTP client trusting the cluster CA.
func (c *Cluster) HTTP() *http.Client {
	if tc := c.TLSConfig(); tc != nil {
		return &http.Client{Transport: client.TLSTransport(tc)}
	}
	return http.DefaultClient
}

// ClientAs is a client of node i with another token.
func (c *Cluster) ClientAs(i int, token string) *client.Client {
	return client.NewTLS(c.APIAddr(i), token, c.TLSConfig())
}

// Env is the environment of a CLI process talking to node i.
func (c *Cluster) Env(i int) []string {
	env := append(os.Environ(), "ZOS_ADDR="+c.APIAddr(i), "ZOS_TOKEN="+c.Token)
	if !c.opts.NoTLS {
		env = append(env, "ZOS_CACERT="+c.CAFile())
	}
	return env
}

// Client returns an admin API client for node i.
func (c *Cluster) Client(i int) *client.Client { return c.ClientAs(i, c.Token) }

// WaitReady waits until node i answers /readyz.
func (c *Cluster) WaitReady(i int, d time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if !c.opts.NoTLS {
		// Node 1 writes the CA when it bootstraps.
		for c.TLSConfig() == nil && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := c.Client(i).WaitReady(ctx); err != nil {
		c.t.Fatalf("node %s not ready: %v", c.Nodes[i].ID, err)
	}
}

// CLI runs the zos binary with ZOS_ADDR pointing at node i and returns
// its combined output.
func (c *Cluster) CLI(i int, args ...string) (string, error) {
	argv := append(append([]string{}, c.Nodes[i].wrap...), c.Bin)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = c.Env(i)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Eventually polls cond until it returns nil or d passes.
func Eventually(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", d, err)
}

// Get is a tiny helper for tests: GET path on node i into out.
func (c *Cluster) Get(ctx context.Context, i int, path string, out any) error {
	return c.Client(i).Do(ctx, http.MethodGet, path, nil, out)
}
