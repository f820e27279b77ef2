package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/internal/pki"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/corex"
	"github.com/zosproject/zos/node/resp"
	"github.com/zosproject/zos/orchestrator"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// ErrRemoved: the node was removed from the cluster and stopped.
var ErrRemoved = errors.New("node: removed from the cluster")

// Node is a running zos node.
type Node struct {
	cfg   Config
	log   *slog.Logger
	id    string
	reg   *prometheus.Registry
	raft  *raft.Server
	api   *orchestrator.Server
	http  *http.Server
	resp  *resp.Server
	agent *agent.Manager
	corex *corex.Corex

	storage *storage
	blockd  *blockd.Service
	nbd     *nbd.Server
	hub     *hub.Hub

	adminToken string
	ready      atomic.Bool

	pki        *pki.Holder // nil without TLS
	bootSecret string      // the cluster secret, at bootstrap
	joinKey    []byte      // the key of the CSR sent with the join

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{} // closed when the node stops on its own
	doneErr error
	doneMu  sync.Once

	closers []func() error // run in reverse order by Close
}

// identity is persisted in Dir/node.json.
type identity struct {
	ID        string `json:"id"`
	ClusterID string `json:"cluster_id,omitempty"`
}

func loadIdentity(dir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if errors.Is(err, os.ErrNotExist) {
		return id, nil
	}
	if err != nil {
		return id, fmt.Errorf("node: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("node: %s/node.json is corrupt: %w", dir, err)
	}
	return id, nil
}

func saveIdentity(dir string, id identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return writeFileAtomic(filepath.Join(dir, "node.json"), append(b, '\n'), 0o600)
}

// writeFileAtomic writes temp, fsyncs, renames, fsyncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Start starts a node and returns once it serves: bootstrapped, joined, or
// restarted and caught up.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	ident, err := loadIdentity(cfg.Dir)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.ID != "" && ident.ID != "" && cfg.ID != ident.ID:
		return nil, fmt.Errorf("node: %s belongs to node %s, not %s", cfg.Dir, ident.ID, cfg.ID)
	case cfg.ID == "" && ident.ID != "":
		cfg.ID = ident.ID
	case cfg.ID == "":
		cfg.ID = "n-" + orchestrator.RandomHex(3)
	}
	if cfg.Domain == "" {
		cfg.Domain = cfg.ID
	}
	if cfg.Capacity == 0 {
		cfg.Capacity, _ = diskUsage(cfg.Dir)
	}
	n := &Node{cfg: cfg, id: cfg.ID, log: cfg.Logger.With("node", cfg.ID), done: make(chan struct{})}
	if cfg.GCGrace < 5*time.Minute {
		n.log.Warn("gc grace period shorter than a vdisk flush may take; chunks of flushes in progress could be collected", "gc_grace", cfg.GCGrace)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Listen first so a busy port fails fast, before any state changes.
	listen := func(what string, port int) (net.Listener, error) {
		ln, err := net.Listen("tcp", cfg.hostPort(port))
		if err != nil {
			return nil, fmt.Errorf("node: %s: %w", what, err)
		}
		n.closers = append(n.closers, func() error { ln.Close(); return nil })
		return ln, nil
	}
	apiLn, err := listen("HTTP API", cfg.APIPort)
	if err != nil {
		return nil, err
	}
	respLn, err := listen("RESP", cfg.RESPPort)
	if err != nil {
		return nil, err
	}
	nbdLn, err := listen("NBD", cfg.NBDPort)
	if err != nil {
		return nil, err
	}
	storage, shardLn, err := n.openStorage()
	if err != nil {
		return nil, err
	}
	n.storage = storage
	n.closers = append(n.closers, func() error {
		if storage.server == nil { // the shard server owns the listener once it serves
			shardLn.Close()
		}
		return storage.close()
	})

	if err := n.setupTLS(ctx, ident); err != nil {
		return nil, err
	}
	raftServerTLS, raftClientTLS := n.raftTLS()
	rs, err := raft.Open(raft.Config{ServerTLS: raftServerTLS, ClientTLS: raftClientTLS,
		ID: cfg.ID, Dir: filepath.Join(cfg.Dir, "raft"), BindAddr: cfg.hostPort(cfg.RaftPort),
		Bootstrap: cfg.Bootstrap && ident.ClusterID == "", Forwarder: &httpForwarder{n: n},
		Logger: cfg.Logger, Registerer: n.reg,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
		SnapshotThreshold: cfg.SnapshotThreshold, TrailingLogs: cfg.SnapshotThreshold, SnapshotInterval: cfg.SnapshotInterval,
	})
	if err != nil {
		return nil, err
	}
	n.raft = rs
	n.closers = append(n.closers, n.closeRaft)

	switch {
	case ident.ClusterID != "":
		n.log.Info("restarting with existing state", "cluster", ident.ClusterID)
		if err := n.waitSelf(ctx); err != nil {
			return nil, err
		}
	case cfg.Bootstrap:
		if err := n.bootstrap(ctx); err != nil {
			return nil, err
		}
	case cfg.Join != "":
		if err := n.join(ctx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("node: %s holds no cluster state: start with --bootstrap or --join ADDR", cfg.Dir)
	}
	if err := n.refreshSelf(ctx); err != nil {
		n.log.Warn("could not update own cluster-map entry", "err", err)
	}

	// The data plane, now that the cluster secret and map are known.
	if err := storage.start(shardLn); err != nil {
		return nil, err
	}
	if err := n.startBlockd(nbdLn); err != nil {
		return nil, err
	}
	if err := n.startAPI(apiLn); err != nil {
		return nil, err
	}
	if cfg.RESPTLS {
		// RESP over TLS with the node certificate (0-core's redis-proxy).
		respLn = tls.NewListener(respLn, n.pki.PublicServerConfig())
	}
	if err := n.startAgent(respLn); err != nil {
		return nil, err
	}
	n.ready.Store(true)
	n.startLoops()
	n.startTLSLoops()
	n.log.Info("node serving", "api", cfg.hostPort(cfg.APIPort), "raft", cfg.hostPort(cfg.RaftPort))
	return n, nil
}

// self returns this node's cluster-map entry as it should be.
func (n *Node) self() fsm.Node {
	c := &n.cfg
	return fsm.Node{ID: n.id, Addr: c.Advertise, RaftAddr: c.advertisePort(c.RaftPort), APIAddr: c.advertisePort(c.APIPort),
		ShardAddr: c.advertisePort(c.ShardPort), NBDAddr: c.advertisePort(c.NBDPort), RESPAddr: c.advertisePort(c.RESPPort),
		Domain: c.Domain, Capacity: c.Capacity, Version: c.Version}
}

func (n *Node) bootstrap(ctx context.Context) error {
	if err := n.raft.WaitLeader(ctx); err != nil {
		return err
	}
	token := n.cfg.Token
	tokID := "admin"
	if token == "" {
		token, tokID = orchestrator.NewToken()
		n.adminToken = token
		if err := writeFileAtomic(filepath.Join(n.cfg.Dir, "admin-token"), []byte(token+"\n"), 0o600); err != nil {
			return fmt.Errorf("node: save admin token: %w", err)
		}
	}
	clusterID := "zos-" + orchestrator.RandomHex(4)
	secret := n.bootSecret // the CA's (setupTLS)
	if secret == "" {
		secret = orchestrator.RandomHex(24)
	}
	err := raft.Exec(ctx, n.raft, fsm.ClusterInit, fsm.InitArgs{ClusterID: clusterID, Secret: secret,
		Admin: fsm.Token{ID: tokID, Name: "admin", Hash: orchestrator.HashToken(token), Role: fsm.RoleAdmin}})
	if err != nil {
		return fmt.Errorf("node: initialize cluster: %w", err)
	}
	if err := n.publishCA(ctx); err != nil {
		return fmt.Errorf("node: publish the cluster CA: %w", err)
	}
	self := n.self()
	self.Voter = true
	if err := raft.Exec(ctx, n.raft, fsm.NodeAdd, fsm.NodeAddArgs{Node: self}); err != nil {
		return fmt.Errorf("node: add self: %w", err)
	}
	n.log.Info("cluster bootstrapped", "cluster", clusterID)
	return saveIdentity(n.cfg.Dir, identity{ID: n.id, ClusterID: clusterID})
}

func joinURL(addr string, tls bool) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, strconv.Itoa(DefaultAPIPort))
	}
	if tls {
		return "https://" + addr
	}
	return "http://" + addr
}

func (n *Node) join(ctx context.Context) error {
	c := n.peerClient(joinURL(n.cfg.Join, n.pki != nil), n.cfg.Token)
	csr, err := n.joinCSR()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	var resp orchestrator.JoinResponse
	for attempt := 0; ; attempt++ {
		var err error
		resp, err = c.JoinCSR(ctx, n.self(), csr)
		if err == nil {
			break
		}
		var apiErr *client.Error
		if errors.As(err, &apiErr) && apiErr.Status < 500 {
			return fmt.Errorf("node: join through %s refused: %w", n.cfg.Join, err)
		}
		n.log.Info("join not possible yet, retrying", "via", n.cfg.Join, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: join through %s: %w (last error: %v)", n.cfg.Join, ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
	n.log.Info("joined", "cluster", resp.ClusterID, "voter", resp.Voter, "leader", resp.LeaderID)
	if err := n.acceptJoinCert(&resp); err != nil {
		return err
	}
	if err := n.waitSelf(ctx); err != nil {
		return err
	}
	if resp.Voter {
		// Caught up: now it is safe to count this node in the quorum.
		sc := n.peerClient(joinURL(n.cfg.Join, n.pki != nil), resp.Secret)
		for {
			err := sc.Promote(ctx, n.id)
			if err == nil {
				break
			}
			n.log.Info("promotion to voter not possible yet, retrying", "err", err)
			select {
			case <-ctx.Done():
				return fmt.Errorf("node: promotion to voter: %w (last error: %v)", ctx.Err(), err)
			case <-time.After(500 * time.Millisecond):
			}
		}
		n.log.Info("promoted to voter")
	}
	return saveIdentity(n.cfg.Dir, identity{ID: n.id, ClusterID: resp.ClusterID})
}

// waitSelf waits until the local replica knows this node and a leader.
func (n *Node) waitSelf(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	for {
		ch := n.raft.Changed()
		var state fsm.NodeState
		n.raft.ReadStale(func(st *fsm.State) error {
			if me := st.Nodes[n.id]; me != nil {
				state = me.State
			}
			return nil
		})
		if state == fsm.NodeRemoved {
			return fmt.Errorf("%w: wipe %s to join again", ErrRemoved, n.cfg.Dir)
		}
		if leader, _ := n.raft.Leader(); state != "" && leader != "" {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("node: catching up with the cluster: %w", ctx.Err())
		}
	}
}

// refreshSelf updates this node's map entry when its addresses or version
// changed since it joined (a restart with other flags).
func (n *Node) refreshSelf(ctx context.Context) error {
	want := n.self()
	var cur fsm.Node
	n.raft.ReadStale(func(st *fsm.State) error {
		if me := st.Nodes[n.id]; me != nil {
			cur = *me
		}
		return nil
	})
	if cur.APIAddr == want.APIAddr && cur.ShardAddr == want.ShardAddr && cur.NBDAddr == want.NBDAddr &&
		cur.RESPAddr == want.RESPAddr && cur.Version == want.Version {
		return nil
	}
	err := raft.Exec(ctx, n.raft, fsm.NodeUpdate, fsm.NodeUpdateArgs{ID: n.id, APIAddr: &want.APIAddr,
		ShardAddr: &want.ShardAddr, NBDAddr: &want.NBDAddr, RESPAddr: &want.RESPAddr, Version: &want.Version})
	return err
}

// ID returns the node ID.
func (n *Node) ID() string { return n.id }

// AdminToken returns the admin token generated at bootstrap ("" if it was
// given or this node did not bootstrap).
func (n *Node) AdminToken() string { return n.adminToken }

// APIAddr returns the HTTP API address (host:port).
func (n *Node) APIAddr() string { return n.cfg.hostPort(n.cfg.APIPort) }

// Raft returns the control-plane member.
func (n *Node) Raft() *raft.Server { return n.raft }

// Registry returns the node's metrics registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Done is closed when the node stops on its own (it was removed); Err then
// says why.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the node stopped on its own.
func (n *Node) Err() error { return n.doneErr }

func (n *Node) stopSelf(err error) {
	n.doneMu.Do(func() {
		n.doneErr = err
		close(n.done)
	})
}

func (n *Node) closeRaft() error {
	if n.raft.IsLeader() {
		// Hand over so the others need not wait for an election timeout.
		if err := n.raft.TransferLeadership(); err != nil {
			n.log.Debug("leadership transfer on shutdown", "err", err)
		}
	}
	return n.raft.Close()
}

// Close stops the node gracefully. It does not leave the cluster.
func (n *Node) Close() error {
	n.ready.Store(false)
	n.cancel()
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		if err := n.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	n.closers = nil
	n.wg.Wait()
	return errors.Join(errs...)
}

// Run starts a node and serves until ctx ends or the node is removed.
func Run(ctx context.Context, cfg Config) error {
	n, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	if n.AdminToken() != "" {
		fmt.Fprintf(os.Stderr, "admin token: %s (saved in %s)\n", n.AdminToken(), filepath.Join(n.cfg.Dir, "admin-token"))
	}
	select {
	case <-ctx.Done():
	case <-n.Done():
	}
	n.log.Info("shutting down")
	cerr := n.Close()
	if n.Err() != nil {
		return n.Err()
	}
	return cerr
}

// diskUsage returns the size and the used bytes of the file system at dir.
func diskUsage(dir string) (capacity, used int64) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0
	}
	capacity = int64(st.Blocks) * st.Bsize
	used = capacity - int64(st.Bavail)*st.Bsize
	return capacity, used
}

// Config returns the node's effective configuration.
func (n *Node) Config() Config { return n.cfg }
