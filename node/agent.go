package node

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/agent/flistmount"
	"github.com/zosproject/zos/node/agent/info"
	"github.com/zosproject/zos/node/resp"
	"github.com/zosproject/zos/raft/fsm"
)

// flistCacheBytes bounds the node's shared flist chunk cache.
const flistCacheBytes = 4 << 30

// startAgent serves RESP on ln with the agent's keyspace and runs the job
// manager (0-core's protocol). Only admin tokens and the cluster secret
// authenticate: a job runs as root on the host.
func (n *Node) startAgent(ln net.Listener) error {
	ks := resp.NewKeyspace(resp.KeyspaceConfig{})
	n.closers = append(n.closers, func() error { ks.Close(); return nil })
	m, err := agent.New(agent.Config{Keyspace: ks, Version: n.cfg.Version, Logger: n.cfg.Logger, Registerer: n.reg})
	if err != nil {
		return err
	}
	info.Register(m)
	brs := bridge.Register(m, bridge.Config{RunDir: filepath.Join(n.cfg.Dir, "run", "bridges"), Logger: n.cfg.Logger})
	n.closers = append(n.closers, func() error { brs.Close(); return nil })
	c, err := cache.Open(cache.Config{Dir: filepath.Join(n.cfg.Dir, "flist-cache"), MaxBytes: flistCacheBytes})
	if err != nil {
		return fmt.Errorf("node: flist cache: %w", err)
	}
	n.closers = append(n.closers, c.Close)
	fm := flistmount.Register(m, flistmount.Config{Open: n.openFlist, Cache: c, Logger: n.cfg.Logger})
	n.closers = append(n.closers, fm.Close)
	n.startVMs(m, brs) // kvm.* (node/kvm.go)
	n.agent = m
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Run(n.ctx); err != nil {
			n.log.Error("agent stopped", "err", err)
		}
	}()
	// Closed before the mounts and the keyspace: every job is killed and
	// reaped first.
	n.closers = append(n.closers, func() error { m.Close(); <-done; return nil })

	n.resp = resp.New(resp.Config{Logger: n.cfg.Logger, Registerer: n.reg, IdleTimeout: 10 * time.Minute,
		Handlers: resp.ListHandlers(ks),
		Auth: func(tok string) bool {
			id, err := n.api.Authenticate(tok)
			return err == nil && id.Admin
		}})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.resp.Serve(n.ctx, ln); err != nil {
			n.log.Error("RESP server stopped", "err", err)
		}
	}()
	n.closers = append(n.closers, n.resp.Close)
	return nil
}

// openFlist opens an flist for flist.mount: a hub URL, or REPO/NAME of
// this cluster (read through this node's own hub).
func (n *Node) openFlist(ctx context.Context, url string) (*flist.Reader, chunkstore.Fetcher, error) {
	if strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://") {
		base, p, err := hub.SplitURL(url)
		if err != nil {
			return nil, nil, err
		}
		c := hub.NewClient(base, n.clusterSecret())
		r, err := c.Open(ctx, p)
		return r, c, err
	}
	repo, name, ok := strings.Cut(url, "/")
	if !ok || hub.CheckName(repo) != nil || hub.CheckName(hub.TrimFlistName(name)) != nil {
		return nil, nil, agent.Argf("url %q: want REPO/NAME or http://HOST:5000/REPO/NAME.flist", url)
	}
	c := hub.NewClient("http://"+n.APIAddr(), n.clusterSecret())
	r, err := c.Open(ctx, repo+"/"+hub.TrimFlistName(name))
	return r, c, err
}

func (n *Node) clusterSecret() string {
	var s string
	n.raft.ReadStale(func(st *fsm.State) error { s = st.Secret; return nil })
	return s
}

// Agent returns the node agent's job manager.
func (n *Node) Agent() *agent.Manager { return n.agent }
