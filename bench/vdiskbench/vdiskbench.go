package vdiskbench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/raft"
)

// Config configures Run. Zero fields take defaults.
type Config struct {
	// Bench is passed to nbdbench.Run (runtime, size, targets, workloads,
	// binaries). Its ZosURI is set by Run unless ZosURI below is set.
	Bench nbdbench.Config
	// ZosURI, if set, measures this export instead of an in-process vdisk.
	ZosURI string
	// Store backs the in-process vdisk; nil means a disk store in Dir
	// (Memory selects an in-memory store, Cluster an in-process cluster of
	// that many storage nodes on 127.0.0.x with the erasure store over
	// them, as chunkstore/localcluster runs it).
	Store   chunkstore.Store
	Memory  bool
	Cluster int
	// ClusterPrefix places the Cluster's nodes on ClusterPrefix+150 on
	// (default "127.0.0.", as in localcluster.Config).
	ClusterPrefix string
	// Dir holds the disk store and qemu-nbd's raw file; default a
	// temporary directory (removed afterwards).
	Dir string
	// BlockSize of the vdisk; 0 means blockd's default.
	BlockSize int64
	// Addr is the IP the in-process NBD server listens on; default
	// 127.0.0.1.
	Addr string
	// Blockd adjusts the blockd Config (cache sizes, parallelism…).
	Blockd func(*blockd.Config)
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

// Run starts the zos target (unless cfg.ZosURI is set), runs nbdbench and
// returns its report: results per target and workload, and ratios via
// Report.Ratio.
func Run(ctx context.Context, cfg Config) (*nbdbench.Report, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "vdiskbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	bc := cfg.Bench
	bc.Logger = cfg.Logger
	if bc.Dir == "" {
		bc.Dir = cfg.Dir
	}
	if bc.Size == 0 {
		bc.Size = 1 << 30
	}
	if cfg.ZosURI != "" {
		bc.ZosURI = cfg.ZosURI
		return nbdbench.Run(ctx, bc)
	}
	uri, stop, err := Serve(ctx, cfg, bc.Size)
	if err != nil {
		return nil, err
	}
	defer stop()
	bc.ZosURI = uri
	return nbdbench.Run(ctx, bc)
}

// Serve starts an in-process vdisk of size bytes named "bench" as Run
// does and returns its NBD URI and the function that stops everything.
func Serve(ctx context.Context, cfg Config, size int64) (string, func(), error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var closers []func()
	stop := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	st := cfg.Store
	switch {
	case st != nil:
	case cfg.Memory:
		st = mem.New()
	case cfg.Cluster > 0:
		if cfg.Dir == "" {
			return "", nil, fmt.Errorf("vdiskbench: a cluster needs Dir")
		}
		c, err := localcluster.Start(localcluster.Config{Nodes: cfg.Cluster, Dir: filepath.Join(cfg.Dir, "cluster"), Prefix: cfg.ClusterPrefix, FirstHost: 150, Logger: cfg.Logger})
		if err != nil {
			return "", nil, err
		}
		closers = append(closers, func() { c.Close() })
		st = c.Store
	default:
		if cfg.Dir == "" {
			return "", nil, fmt.Errorf("vdiskbench: a disk store needs Dir")
		}
		ds, err := disk.Open(disk.Config{Dir: filepath.Join(cfg.Dir, "store"), CompactInterval: -1})
		if err != nil {
			return "", nil, err
		}
		closers = append(closers, func() { ds.Close() })
		st = chunkstore.WholeChunks(ds)
	}
	bcfg := blockd.Config{Node: "bench", Control: raft.NewLocal("bench"), Logger: cfg.Logger,
		Registerer: prometheus.NewRegistry(), StoreFor: func(string, string) chunkstore.Store { return st }}
	if cfg.Blockd != nil {
		cfg.Blockd(&bcfg)
	}
	svc, err := blockd.New(bcfg)
	if err != nil {
		stop()
		return "", nil, err
	}
	closers = append(closers, func() { svc.Close() })
	if _, err := svc.Create(ctx, blockd.CreateOptions{Name: "bench", Size: size, BlockSize: cfg.BlockSize}, nil, nil); err != nil {
		stop()
		return "", nil, err
	}
	srv, err := nbd.New(nbd.Config{Exports: svc.Exports(), Logger: cfg.Logger})
	if err != nil {
		stop()
		return "", nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		stop()
		return "", nil, err
	}
	done := make(chan struct{})
	go func() {
		srv.Serve(context.Background(), ln)
		close(done)
	}()
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	})
	return "nbd://" + ln.Addr().String() + "/bench", stop, nil
}
