package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/zosproject/zos/blockd/nbd/nbdbench"
	"github.com/zosproject/zos/node"
	"github.com/zosproject/zos/orchestrator/client"
)

// NBDConfig configures the vdisk benchmark.
type NBDConfig struct {
	Runtime time.Duration // per fio job; default 10s
	Size    int64         // vdisk and anchor export size; default 1 GiB
	Nodes   int           // cluster size; default 3
	// Targets besides zos: default nbdkit-memory and qemu-nbd-raw.
	Anchors []string
	Logger  *slog.Logger
}

// NBD measures fio (nbd engine) against a vdisk served by a loopback
// cluster of real nodes (chunk store with fsync, Raft heads), and against
// nbdkit memory and qemu-nbd on a raw file in the same run.
func NBD(ctx context.Context, cfg NBDConfig) (*nbdbench.Report, error) {
	if cfg.Runtime == 0 {
		cfg.Runtime = 10 * time.Second
	}
	if cfg.Size == 0 {
		cfg.Size = 1 << 30
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Anchors == nil {
		cfg.Anchors = []string{nbdbench.TargetNbdkit, nbdbench.TargetQemuNBD}
	}
	dir, err := os.MkdirTemp("", "zos-bench-nbd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	base := fmt.Sprintf("127.%d.%d.1", 20+rand.IntN(200), rand.IntN(250))
	dev, err := node.StartDev(ctx, node.DevConfig{Dir: dir, Nodes: cfg.Nodes, BaseIP: base})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	c := client.New(dev.Nodes[0].APIAddr(), dev.Token)
	if err := c.Do(ctx, http.MethodPost, "/api/v1/vdisks", map[string]any{"name": "bench", "size": cfg.Size}, nil); err != nil {
		return nil, fmt.Errorf("bench: create vdisk: %w", err)
	}
	n0 := dev.Nodes[0].Config()
	uri := fmt.Sprintf("nbd://%s:%d/bench", n0.Bind, n0.NBDPort)
	return nbdbench.Run(ctx, nbdbench.Config{Runtime: cfg.Runtime, Size: cfg.Size, Dir: dir, ZosURI: uri,
		Targets: append([]string{nbdbench.TargetZos}, cfg.Anchors...), Logger: cfg.Logger})
}
