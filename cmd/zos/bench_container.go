package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench"
	"github.com/zosproject/zos/bench/report"
)

func newBenchContainerCmd() *cobra.Command {
	o := &benchOpts{}
	var cfg bench.ContainerConfig
	cmd := workloadCmd("container", "Container start (corex.create → first output) from an flist on a fresh node's hub, cold and warm, vs download + extract of the rootfs tar.gz + runc run", o, containerWorkload(&cfg, false))
	addBenchFlags(cmd, o, 1, 0, "unused")
	cmd.Flags().StringVar(&cfg.Root, "root", "", "container root file system (default: the tests' Debian tree, else busybox)")
	cmd.Flags().IntVar(&cfg.Rounds, "rounds", 3, "rounds (each on a fresh node); the figures are medians")
	return cmd
}

// containerWorkload runs bench.Container with this binary as the node.
// With --cluster it fails, or (skipOnCluster: `bench all`) does nothing.
func containerWorkload(cfg *bench.ContainerConfig, skipOnCluster bool) workloadFunc {
	return func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
		if o.Cluster != "" && skipOnCluster {
			progress("container: skipped (it starts its own nodes on this machine; run zos bench container without --cluster)")
			return nil, nil
		}
		if o.Cluster != "" {
			return nil, fmt.Errorf("bench container starts its own nodes (it needs their disks and runc on this machine): drop --cluster")
		}
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		c := *cfg
		c.Binary, c.Progress = exe, progress
		if c.Log == nil {
			c.Log = io.Discard
		}
		w, _, err := bench.Container(ctx, c)
		if err != nil {
			return nil, err
		}
		return []report.Workload{w}, nil
	}
}
