package node

import (
	"context"
	"errors"
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
	"github.com/zosproject/zos/node/agent/corex"
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
	// Containers (corex.*): state under the node dir; they keep running
	// when the node stops (see node/agent/corex).
	cx, err := corex.Register(n.ctx, m, corex.Config{Dir: filepath.Join(n.cfg.Dir, "corex"),
		Bridge: n.cfg.ContainerBridge, BridgeCIDR: n.cfg.ContainerCIDR, NATTable: hostScoped(n.cfg.ContainerBridge), CgroupParent: hostScoped(n.cfg.ContainerBridge), Open: n.openFlistArg, Cache: c,
		Bridges: brs, Logger: n.cfg.Logger, Registerer: n.reg})
	if err != nil {
		// No runc, or no CAP_NET_ADMIN: the node runs without containers.
		n.log.Warn("containers (corex.*) unavailable", "err", err)
	} else {
		n.closers = append(n.closers, cx.Close)
		n.corex = cx
	}
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
			return err == nil && id.IsAdmin()
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
		n.hubTLS(c)
		r, err := c.Open(ctx, p)
		return r, c, err
	}
	repo, name, ok := strings.Cut(url, "/")
	if !ok || hub.CheckName(repo) != nil || hub.CheckName(hub.TrimFlistName(name)) != nil {
		return nil, nil, agent.Argf("url %q: want REPO/NAME or http://HOST:5000/REPO/NAME.flist", url)
	}
	c := hub.NewClient(n.scheme()+"://"+n.APIAddr(), n.clusterSecret())
	n.hubTLS(c)
	r, err := c.Open(ctx, repo+"/"+hub.TrimFlistName(name))
	return r, c, err
}

// openFlistArg is openFlist with a missing flist as the caller's mistake.
func (n *Node) openFlistArg(ctx context.Context, url string) (*flist.Reader, chunkstore.Fetcher, error) {
	r, f, err := n.openFlist(ctx, url)
	if errors.Is(err, hub.ErrNotFound) {
		return nil, nil, &agent.ArgError{Err: fmt.Errorf("no flist %s on the hub: %w", url, err)}
	}
	return r, f, err
}

func (n *Node) clusterSecret() string {
	var s string
	n.raft.ReadStale(func(st *fsm.State) error { s = st.Secret; return nil })
	return s
}

// Agent returns the node agent's job manager.
func (n *Node) Agent() *agent.Manager { return n.agent }

// hostScoped names the nftables table of the containers' port forwards
// and their cgroup parent: zos's own ("zos") for the default bridge, ones
// of their own (zos_BRIDGE) for another bridge, so that nodes sharing a
// host (tests, a lab) never take each other's forwards or cgroups for
// strays when they reconcile.
func hostScoped(bridge string) string {
	if bridge == "" || bridge == "zos0" {
		return "" // the default, "zos"
	}
	b := []byte("zos_" + bridge)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
