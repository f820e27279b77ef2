package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strings"
	"time"

	"github.com/zosproject/zos/node"
	"github.com/zosproject/zos/orchestrator/client"
)

// Cluster is the zos cluster a workload measures: an existing one reached
// through its API (Connect) or an embedded dev cluster (StartDev). Every
// object a workload creates on it is named with Prefix ("bench-…") and
// removed before the workload returns, error or interrupt included.
type Cluster struct {
	API *client.Client
	// NBDAddr is host:port of a node's NBD server.
	NBDAddr string
	// Desc says what is benchmarked, for the report.
	Desc string
	// Prefix names this run's objects: "bench-" + a random id.
	Prefix string
	// Embedded is set for a dev cluster (its nodes run in this process).
	Embedded bool
	dev      *node.Dev
	dir      string
}

// ErrUnreachable means the cluster did not answer; ErrUnauthorized that it
// refused the token.
var (
	ErrUnreachable  = errors.New("bench: cluster unreachable")
	ErrUnauthorized = errors.New("bench: cluster refused the token")
)

// ConnectTimeout bounds the first call to a cluster.
const ConnectTimeout = 5 * time.Second

func newPrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "bench-" + hex.EncodeToString(b) + "-"
}

// Connect checks that the cluster at addr answers and accepts token
// (within ConnectTimeout) and returns it. An https address is checked
// against the system's roots; ConnectTLS trusts a cluster CA.
func Connect(ctx context.Context, addr, token string) (*Cluster, error) {
	return ConnectTLS(ctx, addr, token, nil)
}

// ConnectTLS is Connect trusting tc (nil: Connect); an address without a
// scheme is then https. The CLI passes the CA of $ZOS_CACERT.
func ConnectTLS(ctx context.Context, addr, token string, tc *tls.Config) (*Cluster, error) {
	c := client.NewTLS(addr, token, tc)
	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	st, err := c.ClusterStatus(cctx)
	if err != nil {
		var ae *client.Error
		switch {
		case errors.As(err, &ae) && (ae.Status == 401 || ae.Status == 403):
			return nil, fmt.Errorf("%w at %s (set ZOS_TOKEN to a token of the cluster): %v", ErrUnauthorized, c.Addr, err)
		case errors.As(err, &ae):
			return nil, fmt.Errorf("bench: cluster at %s: %w", c.Addr, err)
		}
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return nil, fmt.Errorf("bench: cluster at %s: its certificate is not trusted (set ZOS_CACERT to the cluster CA: zos cluster ca > ca.pem): %w", c.Addr, err)
		}
		return nil, fmt.Errorf("%w: %s did not answer within %v: %v", ErrUnreachable, c.Addr, ConnectTimeout, err)
	}
	if token == "" {
		return nil, fmt.Errorf("%w at %s: ZOS_TOKEN is empty", ErrUnauthorized, c.Addr)
	}
	// Writes need a token too: the status may be readable without one.
	if _, err := c.Pins(cctx); err != nil {
		var ae *client.Error
		if errors.As(err, &ae) && (ae.Status == 401 || ae.Status == 403) {
			return nil, fmt.Errorf("%w at %s (set ZOS_TOKEN to an admin or operator token): %v", ErrUnauthorized, c.Addr, err)
		}
		return nil, fmt.Errorf("bench: cluster at %s: %w", c.Addr, err)
	}
	cl := &Cluster{API: c, Prefix: newPrefix(), Desc: fmt.Sprintf("cluster at %s (%d nodes)", c.Addr, len(st.Nodes))}
	// NBD on the node we talk to when it serves NBD, else any node's.
	host := strings.TrimPrefix(strings.TrimPrefix(c.Addr, "http://"), "https://")
	host, _, _ = net.SplitHostPort(host)
	for _, n := range st.Nodes {
		if n.NBDAddr == "" {
			continue
		}
		if cl.NBDAddr == "" || n.Addr == host {
			cl.NBDAddr = n.NBDAddr
		}
	}
	return cl, nil
}

// StartDev starts an embedded dev cluster of nodes nodes (default 3) on a
// random 127.X.Y.1 range.
func StartDev(ctx context.Context, nodes int) (*Cluster, error) {
	if nodes == 0 {
		nodes = 3
	}
	dir, err := os.MkdirTemp("", "zos-bench-dev-")
	if err != nil {
		return nil, err
	}
	base := fmt.Sprintf("127.%d.%d.1", 20+mrand.IntN(200), mrand.IntN(250))
	dev, err := node.StartDev(ctx, node.DevConfig{Dir: dir, Nodes: nodes, BaseIP: base})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n0 := dev.Nodes[0].Config()
	return &Cluster{API: dev.Client(0), NBDAddr: fmt.Sprintf("%s:%d", n0.Bind, n0.NBDPort),
		Desc: fmt.Sprintf("embedded dev cluster, %d nodes in this process", nodes), Prefix: newPrefix(), Embedded: true, dev: dev, dir: dir}, nil
}

// Dev returns the embedded cluster's nodes, or nil.
func (c *Cluster) Dev() *node.Dev { return c.dev }

// Close stops an embedded cluster; for an existing one it does nothing.
func (c *Cluster) Close() {
	if c.dev != nil {
		c.dev.Close()
		os.RemoveAll(c.dir)
	}
}

// cleanupCtx is a context for removing objects after ctx was cancelled
// (an interrupt): not cancelled with it, bounded on its own.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// Leftovers lists the objects named bench-… on the cluster: vdisks, flists
// and pinned blobs (by their note). A finished run leaves none.
func Leftovers(ctx context.Context, api *client.Client) ([]string, error) {
	var out []string
	vds, err := api.VDisks(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range vds {
		if strings.HasPrefix(v.Name, "bench-") {
			out = append(out, "vdisk "+v.Name)
		}
	}
	pins, err := api.Pins(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pins {
		if strings.HasPrefix(p.Note, "bench-") {
			out = append(out, "blob "+p.Ref.String()+" ("+p.Note+")")
		}
	}
	repos, err := api.Hub().ListRepos(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range repos {
		ents, err := api.Hub().List(ctx, r)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name, "bench-") || strings.HasPrefix(r, "bench-") {
				out = append(out, "flist "+r+"/"+e.Name)
			}
		}
	}
	return out, nil
}

// sweep removes what this run named with c.Prefix and may not know of:
// a blob pinned, a vdisk created or an flist uploaded by a request the
// server finished after an interrupt cancelled it on this side (its
// answer, and so the Ref, never arrived). After an interrupt it first
// gives such requests a moment to end.
func (c *Cluster) sweep(ctx context.Context) {
	interrupted := ctx.Err() != nil
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	for round := range 2 {
		if interrupted || round > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		found := 0
		if pins, err := c.API.Pins(cctx); err == nil {
			for _, p := range pins {
				if strings.HasPrefix(p.Note, c.Prefix) {
					found++
					_ = c.API.Unpin(cctx, p.Ref)
				}
			}
		}
		if vds, err := c.API.VDisks(cctx); err == nil {
			for _, v := range vds {
				if strings.HasPrefix(v.Name, c.Prefix) {
					found++
					_ = c.API.DeleteVDisk(cctx, v.Name, true)
				}
			}
		}
		h := c.API.Hub()
		if repos, err := h.ListRepos(cctx); err == nil {
			for _, r := range repos {
				ents, err := h.List(cctx, r)
				if err != nil {
					continue
				}
				for _, e := range ents {
					if strings.HasPrefix(e.Name, c.Prefix) {
						found++
						_ = h.Delete(cctx, r, e.Name)
					}
				}
			}
		}
		if found == 0 && !interrupted {
			return
		}
	}
}
