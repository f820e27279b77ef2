package blockd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/raft"
)

// Defaults for Config; doc.go explains how the block size and fanout were
// chosen.
const (
	DefaultBlockSize         = 16 << 10
	DefaultFanout            = tree.DefaultFanout
	DefaultLeaseTTL          = 15 * time.Second
	DefaultWritebackInterval = 5 * time.Second
	DefaultParallelism       = 256
	DefaultFlushTimeout      = 2 * time.Minute

	// DefaultMaxDirtyBytes (per vdisk), DefaultNodeDirtyBytes (all vdisks
	// of the node) and DefaultBlockCacheBytes are capped at 1/8, 1/4 and
	// 1/8 of the memory the process may use (RAM, or its cgroup's limit).
	// Like the page cache under qemu-nbd, the write-back cache absorbs
	// rewrites of hot blocks and the clean cache serves hot blocks
	// without store round trips; doc.go has the measurements.
	DefaultMaxDirtyBytes   = 1 << 30
	DefaultNodeDirtyBytes  = 4 << 30
	DefaultBlockCacheBytes = 1 << 30
	// DefaultNodeCacheBytes (capped at 1/32 of memory) holds the leaves of
	// 128 GiB of 16 KiB blocks.
	DefaultNodeCacheBytes = 256 << 20
	// DefaultReadaheadBytes is the largest readahead window of a
	// sequential reader (see Config.ReadaheadBytes).
	DefaultReadaheadBytes = 16 << 20
)

// StoreFor returns the chunk store holding the data of vdisks of a pool and
// type: cache vdisks use the pool's non-redundant (k+0) profile, the others
// its redundant profile.
type StoreFor func(pool, typ string) chunkstore.Store

// Peers reaches the blockd services of other nodes.
type Peers interface {
	// Sync asks node to commit vdisk name, attached read-write there
	// (Service.SyncLocal on that node): when it returns nil, the vdisk's
	// head holds every write the node acknowledged before the call. It
	// fails with an error wrapping ErrNotAttached when the vdisk is not
	// attached read-write there.
	Sync(ctx context.Context, node, name string) error
}

// Config configures a Service. Zero fields take the defaults above.
type Config struct {
	// Node is this node's ID in the cluster map; read-write leases are
	// taken in its name. Required.
	Node string
	// Control is the control plane (raft.Server, or raft.Local in tests).
	// Required.
	Control raft.Control
	// StoreFor selects the chunk store of a vdisk. Required.
	StoreFor StoreFor
	// JournalFor, if set, returns the write journal of vdisks of a pool
	// and type (nil: none). With a journal a FLUSH is one replicated
	// append and the commit follows in the background; without, a FLUSH
	// waits for the commit (see doc.go, "Write journal").
	JournalFor func(pool, typ string) journal.Log
	// Peers reaches the blockd of the other nodes: operations that read a
	// vdisk's head (snapshot, clone, export, diff, NAME:ro) ask the node
	// holding its read-write lease to commit it first, so they see every
	// write that node acknowledged. Nil: such operations read the head at
	// the holder's last commit (single-node tests).
	Peers Peers
	// Logger gets the service's logs (component=blockd); nil means
	// slog.Default().
	Logger *slog.Logger
	// Registerer receives the Prometheus metrics; nil registers none.
	Registerer prometheus.Registerer

	// DefaultBlockSize is used by Create when none is given.
	DefaultBlockSize int64
	// Fanout is the number of slots per tree node. Trees written with one
	// fanout can only be read with the same one: do not change it on a
	// cluster with data.
	Fanout int
	// LeaseTTL is how long a read-write lease lives without renewal; a
	// node that dies releases its vdisks after at most this long (at once
	// when the node is marked down). LeaseRenew is the renewal period,
	// LeaseTTL/3 by default.
	LeaseTTL, LeaseRenew time.Duration
	// MaxDirtyBytes bounds the write-back cache of one vdisk (dirty plus
	// being-flushed data); writers wait when it is full. Write-back starts
	// early when WritebackBytes (MaxDirtyBytes/2 by default) are dirty.
	MaxDirtyBytes, WritebackBytes int64
	// NodeDirtyBytes bounds the write-back caches of all vdisks open on
	// the node together: past half of it the vdisks being written write
	// back; past it writers wait and every vdisk writes back.
	NodeDirtyBytes int64
	// WritebackInterval flushes dirty data that waited this long even
	// without a FLUSH from the client; negative disables.
	WritebackInterval time.Duration
	// BlockCacheBytes and NodeCacheBytes bound the node-wide caches of
	// clean blocks and of tree nodes (shared by all vdisks: clones share
	// their origin's cached blocks). Negative disables a cache.
	BlockCacheBytes, NodeCacheBytes int64
	// Parallelism bounds the concurrent chunk puts and fetches of one
	// vdisk's write-back, and of one read, import or export. Stores with
	// network round trips need many in flight: group commits grow with
	// the puts in flight (BenchmarkClusterPutParallelism; figures in
	// docs/benchmarks.md, "Write-back parallelism").
	Parallelism int
	// FlushTimeout bounds one flush (store writes and the head commit,
	// retried while the control plane is unreachable).
	FlushTimeout time.Duration
	// ReadaheadBytes is the largest readahead window of a vdisk read
	// sequentially: its next blocks are fetched into the block cache in
	// the background, the window doubling from 256 KiB (or twice the
	// read) up to this (see doc.go, "Reads"). It is capped at 1/8 of
	// BlockCacheBytes, so what is read ahead stays cached until it is
	// read. Default DefaultReadaheadBytes; negative disables readahead.
	ReadaheadBytes int64
	// ExtentBytes is the largest chunk a run of contiguous complete dirty
	// blocks is written back as (an extent; see extent.go), at most
	// chunkstore.MaxChunkSize. Default DefaultExtentBytes (1 MiB); negative
	// (or below two blocks) writes every block as its own chunk.
	ExtentBytes int64
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("blockd: invalid config")

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DefaultBlockSize == 0 {
		c.DefaultBlockSize = DefaultBlockSize
	}
	if c.Fanout == 0 {
		c.Fanout = DefaultFanout
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseRenew == 0 {
		c.LeaseRenew = c.LeaseTTL / 3
	}
	if c.MaxDirtyBytes == 0 {
		c.MaxDirtyBytes = fractionOfMemory(DefaultMaxDirtyBytes, 8, 32<<20)
	}
	if c.NodeDirtyBytes == 0 {
		c.NodeDirtyBytes = max(fractionOfMemory(DefaultNodeDirtyBytes, 4, 64<<20), c.MaxDirtyBytes)
	}
	if c.WritebackBytes == 0 {
		c.WritebackBytes = c.MaxDirtyBytes / 2
	}
	if c.WritebackInterval == 0 {
		c.WritebackInterval = DefaultWritebackInterval
	}
	if c.BlockCacheBytes == 0 {
		c.BlockCacheBytes = fractionOfMemory(DefaultBlockCacheBytes, 8, 32<<20)
	}
	if c.NodeCacheBytes == 0 {
		c.NodeCacheBytes = fractionOfMemory(DefaultNodeCacheBytes, 32, 16<<20)
	}
	if c.Parallelism == 0 {
		c.Parallelism = DefaultParallelism
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = DefaultFlushTimeout
	}
	if c.ReadaheadBytes == 0 {
		c.ReadaheadBytes = DefaultReadaheadBytes
	}
	if c.ExtentBytes == 0 {
		c.ExtentBytes = DefaultExtentBytes
	}
	return c
}

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	bs := c.DefaultBlockSize
	switch {
	case c.Node == "":
		return fmt.Errorf("%w: Node is required", ErrConfig)
	case c.Control == nil:
		return fmt.Errorf("%w: Control is required", ErrConfig)
	case c.StoreFor == nil:
		return fmt.Errorf("%w: StoreFor is required", ErrConfig)
	case bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0:
		return fmt.Errorf("%w: DefaultBlockSize %d is not a power of two in [%d, %d]", ErrConfig, bs, MinBlockSize, MaxBlockSize)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("%w: LeaseTTL %v is shorter than 1s", ErrConfig, c.LeaseTTL)
	case c.LeaseRenew <= 0 || c.LeaseRenew >= c.LeaseTTL:
		return fmt.Errorf("%w: LeaseRenew %v must be positive and shorter than LeaseTTL %v", ErrConfig, c.LeaseRenew, c.LeaseTTL)
	case c.MaxDirtyBytes < MaxBlockSize:
		return fmt.Errorf("%w: MaxDirtyBytes %d is below one block (%d)", ErrConfig, c.MaxDirtyBytes, MaxBlockSize)
	case c.WritebackBytes <= 0 || c.WritebackBytes > c.MaxDirtyBytes:
		return fmt.Errorf("%w: WritebackBytes %d must be in (0, MaxDirtyBytes]", ErrConfig, c.WritebackBytes)
	case c.NodeDirtyBytes < MaxBlockSize:
		return fmt.Errorf("%w: NodeDirtyBytes %d is below one block (%d)", ErrConfig, c.NodeDirtyBytes, MaxBlockSize)
	case c.Parallelism < 1:
		return fmt.Errorf("%w: Parallelism %d < 1", ErrConfig, c.Parallelism)
	case c.FlushTimeout < 0:
		return fmt.Errorf("%w: negative FlushTimeout", ErrConfig)
	case c.ExtentBytes > chunkstore.MaxChunkSize:
		return fmt.Errorf("%w: ExtentBytes %d is above the largest chunk (%d)", ErrConfig, c.ExtentBytes, chunkstore.MaxChunkSize)
	}
	return tree.Config{Fanout: c.Fanout}.Validate()
}
