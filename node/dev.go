package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/orchestrator"
	"github.com/zosproject/zos/orchestrator/client"
)

// DevConfig configures an embedded development cluster: N nodes in one
// process on consecutive loopback addresses, with the default ports.
type DevConfig struct {
	Dir    string
	Nodes  int    // default 3
	Token  string // admin token; generated when empty
	BaseIP string // address of the first node; default 127.0.0.1
	Logger *slog.Logger
	// DisableTLS runs the cluster without TLS (--tls=false).
	DisableTLS bool
	// Node, when set, adjusts every node's Config before it starts.
	Node func(i int, c *Config)
}

// Dev is a running development cluster.
type Dev struct {
	Nodes []*Node
	Token string
	// CAFile is the cluster CA certificate, DIR/ca.pem ("" without TLS):
	// ZOS_CACERT for clients.
	CAFile string
}

// StartDev starts the cluster: node 1 bootstraps, the others join it in
// parallel. A directory that already holds a dev cluster restarts it.
func StartDev(ctx context.Context, cfg DevConfig) (*Dev, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Nodes < 1 || cfg.Nodes > 64 {
		return nil, fmt.Errorf("node: dev cluster of %d nodes: want 1-64", cfg.Nodes)
	}
	if cfg.BaseIP == "" {
		cfg.BaseIP = "127.0.0.1"
	}
	base := net.ParseIP(cfg.BaseIP).To4()
	if base == nil {
		return nil, fmt.Errorf("node: dev base address %q is not an IPv4 address", cfg.BaseIP)
	}
	tokenFile := filepath.Join(cfg.Dir, "admin-token")
	if cfg.Token == "" {
		if b, err := os.ReadFile(tokenFile); err == nil {
			cfg.Token = strings.TrimSpace(string(b))
		} else {
			cfg.Token, _ = orchestrator.NewToken()
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if err := writeFileAtomic(tokenFile, []byte(cfg.Token+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("node: save admin token: %w", err)
	}
	d := &Dev{Token: cfg.Token, Nodes: make([]*Node, cfg.Nodes)}
	mk := func(i int) Config {
		ip := make(net.IP, 4)
		copy(ip, base)
		ip[3] += byte(i)
		c := Config{ID: fmt.Sprintf("n%d", i+1), Dir: filepath.Join(cfg.Dir, fmt.Sprintf("n%d", i+1)), Bind: ip.String(),
			Token: cfg.Token, Logger: cfg.Logger, HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			DisableTLS: cfg.DisableTLS}
		if i == 0 {
			c.Bootstrap = true
		} else {
			c.Join = base.String()
			if !cfg.DisableTLS {
				c.CACert = filepath.Join(cfg.Dir, "n1", "tls", "ca.pem")
			}
		}
		if cfg.Node != nil {
			cfg.Node(i, &c)
		}
		return c
	}
	// A fresh cluster needs node 1 to bootstrap before the others join; a
	// restarted one needs a majority up at once to elect a leader.
	firstIdent, err := loadIdentity(filepath.Join(cfg.Dir, "n1"))
	if err != nil {
		return nil, err
	}
	from := 0
	if firstIdent.ClusterID == "" {
		first, err := Start(ctx, mk(0))
		if err != nil {
			return nil, err
		}
		d.Nodes[0] = first
		from = 1
	}
	var wg sync.WaitGroup
	errs := make([]error, cfg.Nodes)
	for i := from; i < cfg.Nodes; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d.Nodes[i], errs[i] = Start(ctx, mk(i))
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		d.Close()
		return nil, err
	}
	if ca := d.Nodes[0].CAFile(); ca != "" {
		b, err := os.ReadFile(ca)
		if err == nil {
			d.CAFile = filepath.Join(cfg.Dir, "ca.pem")
			err = writeFileAtomic(d.CAFile, b, 0o644)
		}
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("node: write the cluster CA: %w", err)
		}
	}
	return d, nil
}

// Close stops every node.
func (d *Dev) Close() error {
	var errs []error
	for i := len(d.Nodes) - 1; i >= 0; i-- {
		if d.Nodes[i] != nil {
			errs = append(errs, d.Nodes[i].Close())
		}
	}
	return errors.Join(errs...)
}

// Client returns an API client of node i with the admin token, trusting
// the cluster CA.
func (d *Dev) Client(i int) *client.Client {
	var tc *tls.Config
	if p := d.Nodes[i].pki; p != nil {
		tc = &tls.Config{RootCAs: p.Pool()}
	}
	return client.NewTLS(d.Nodes[i].APIAddr(), d.Token, tc)
}
