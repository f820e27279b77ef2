package localcluster

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/remote"
	"github.com/zosproject/zos/chunkstore/shard"
)

// Config configures a cluster.
type Config struct {
	// Nodes to start. Default 6.
	Nodes int
	// Dir holds each node's store in Dir/<node id>; "" keeps stores in
	// memory (pebble's MemFS).
	Dir string
	// Secret is the cluster secret. Default a fixed test secret.
	Secret []byte
	// Profile for new chunks. Default chunkstore.DefaultProfile(Nodes).
	Profile chunkstore.Profile
	// NoSync disables fsync in the disk stores.
	NoSync bool
	// SegmentSize of the disk stores (default: the disk package's).
	SegmentSize int64
	// RequestTimeout of the shard clients. Default 30s.
	RequestTimeout time.Duration
	// ReplicateBelow for the erasure store (0: its default).
	ReplicateBelow int
	// Prefix is the first three octets of the nodes' loopback addresses,
	// with a trailing dot. Default "127.0.0."; tests take their package's
	// range from internal/testcluster/loopback.
	Prefix string
	// FirstHost is the last octet of the first node's address. Default 10.
	FirstHost int
	// Logger for everything. Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the erasure store's metrics.
	Registry *prometheus.Registry
}

// Node is one storage node.
type Node struct {
	ID     string
	Addr   string
	Dir    string
	FS     vfs.FS
	Disk   *disk.Store
	Server *shard.Server
	host   int
}

// Cluster is a running in-process cluster.
type Cluster struct {
	cfg   Config
	mu    sync.Mutex
	Nodes []*Node
	Pool  *remote.Pool
	Store *erasure.Store
	m     placement.Map
}

// Start starts the cluster.
func Start(cfg Config) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 6
	}
	if cfg.Secret == nil {
		cfg.Secret = []byte("localcluster-secret-0123456789")
	}
	if cfg.Profile.IsZero() {
		cfg.Profile = chunkstore.DefaultProfile(cfg.Nodes)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "127.0.0."
	}
	if cfg.FirstHost == 0 {
		cfg.FirstHost = 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg}
	c.Pool = remote.NewPool(remote.Config{Secret: cfg.Secret, RequestTimeout: cfg.RequestTimeout, DialTimeout: min(5*time.Second, cfg.RequestTimeout), Logger: cfg.Logger})
	c.m = placement.Map{Epoch: 1}
	for i := range cfg.Nodes {
		n, err := c.startNode(fmt.Sprintf("node-%02d", i+1), cfg.FirstHost+i, "")
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		c.m.Nodes = append(c.m.Nodes, placement.Node{ID: n.ID, Addr: n.Addr, Weight: 1, State: placement.Up})
	}
	st, err := erasure.New(erasure.Config{
		Map:            c.m,
		Dialer:         erasure.PoolDialer(c.Pool, nil),
		Profile:        cfg.Profile,
		ReplicateBelow: cfg.ReplicateBelow,
		Logger:         cfg.Logger,
		Registry:       cfg.Registry,
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Store = st
	return c, nil
}

func (c *Cluster) openDisk(n *Node) error {
	st, err := disk.Open(disk.Config{Dir: n.Dir, FS: n.FS, NoSync: c.cfg.NoSync, SegmentSize: c.cfg.SegmentSize, CompactInterval: -1, Logger: c.cfg.Logger})
	if err != nil {
		return err
	}
	n.Disk = st
	return nil
}

// startNode starts a node (addr "" picks a port on Prefix+host).
func (c *Cluster) startNode(id string, host int, addr string) (*Node, error) {
	n := &Node{ID: id, host: host}
	if c.cfg.Dir == "" {
		n.FS = vfs.NewMem()
		n.Dir = "/" + id
	} else {
		n.FS = vfs.Default
		n.Dir = filepath.Join(c.cfg.Dir, id)
	}
	if err := c.openDisk(n); err != nil {
		return nil, err
	}
	if addr == "" {
		addr = fmt.Sprintf("%s%d:0", c.cfg.Prefix, host)
	}
	srv, err := shard.Start(shard.Config{Addr: addr, Secret: c.cfg.Secret, Store: n.Disk, Logger: c.cfg.Logger})
	if err != nil {
		n.Disk.Close()
		return nil, err
	}
	n.Server = srv
	n.Addr = srv.Addr().String()
	return n, nil
}

// Node returns the node with the given ID.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Stop stops node i's server and closes its store, as if the process was
// killed (its shards stay on its disk).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.Nodes[i]
	c.mu.Unlock()
	if n.Server != nil {
		n.Server.Close()
		n.Server = nil
	}
	if n.Disk != nil {
		n.Disk.Close()
		n.Disk = nil
	}
}

// Restart brings a stopped node back on its address with its data.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	n := c.Nodes[i]
	c.mu.Unlock()
	if n.Server != nil {
		return nil
	}
	if err := c.openDisk(n); err != nil {
		return err
	}
	var srv *shard.Server
	var err error
	for try := 0; try < 50; try++ { // the port may linger briefly
		srv, err = shard.Start(shard.Config{Addr: n.Addr, Secret: c.cfg.Secret, Store: n.Disk, Logger: c.cfg.Logger})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		n.Disk.Close()
		n.Disk = nil
		return err
	}
	n.Server = srv
	return nil
}

// Replace stops node i, discards its store and brings it back empty under
// the same ID and address, as when a failed disk is replaced: the map does
// not change, and healing rebuilds the node's shards onto it.
func (c *Cluster) Replace(i int) error {
	c.Stop(i)
	c.mu.Lock()
	n := c.Nodes[i]
	c.mu.Unlock()
	if c.cfg.Dir == "" {
		n.FS = vfs.NewMem()
	} else if err := os.RemoveAll(n.Dir); err != nil {
		return err
	}
	return c.Restart(i)
}

// Map returns the current cluster map.
func (c *Cluster) Map() placement.Map {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m
	m.Nodes = append([]placement.Node(nil), c.m.Nodes...)
	return m
}

// SetState changes a node's state in the map (a new epoch) and gives the
// map to the store.
func (c *Cluster) SetState(id string, s placement.State) error {
	c.mu.Lock()
	found := false
	for i := range c.m.Nodes {
		if c.m.Nodes[i].ID == id {
			c.m.Nodes[i].State = s
			found = true
		}
	}
	c.m.Epoch++
	m := c.m
	m.Nodes = append([]placement.Node(nil), c.m.Nodes...)
	c.mu.Unlock()
	if !found {
		return fmt.Errorf("localcluster: no node %s", id)
	}
	return c.Store.SetMap(m)
}

// AddNode starts a new empty node and adds it to the map.
func (c *Cluster) AddNode() (*Node, error) {
	c.mu.Lock()
	k := len(c.Nodes)
	c.mu.Unlock()
	n, err := c.startNode(fmt.Sprintf("node-%02d", k+1), c.cfg.FirstHost+k, "")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.m.Nodes = append(c.m.Nodes, placement.Node{ID: n.ID, Addr: n.Addr, Weight: 1, State: placement.Up})
	c.m.Epoch++
	m := c.m
	m.Nodes = append([]placement.Node(nil), c.m.Nodes...)
	c.mu.Unlock()
	return n, c.Store.SetMap(m)
}

// Close stops everything and removes on-disk data under Config.Dir.
func (c *Cluster) Close() {
	if c.Store != nil {
		c.Store.Close()
	}
	if c.Pool != nil {
		c.Pool.Close()
	}
	for i := range c.Nodes {
		c.Stop(i)
	}
	if c.cfg.Dir != "" {
		for _, n := range c.Nodes {
			os.RemoveAll(n.Dir)
		}
	}
}
