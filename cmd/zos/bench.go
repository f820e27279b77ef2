package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/bench/vdiskbench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks against their anchors (results as ratios; see docs/benchmarks.md)"}
	cmd.AddCommand(newBenchRaftCmd(), newBenchStoreCmd(), newBenchNBDCmd(), newBenchVdiskCmd(), newBenchFlistCmd(), newBenchAgentCmd(), newBenchVMCmd())
	cmd.AddCommand(newBenchAllCmd(cmd), newBenchPublishCmd())
	cmd.AddCommand(newBenchContainerCmd())
	return cmd
}

func newBenchVdiskCmd() *cobra.Command {
	var cfg vdiskbench.Config
	cmd := &cobra.Command{Use: "vdisk", Short: "fio over NBD: an in-process vdisk (blockd without Raft or the node) vs nbdkit memory vs qemu-nbd on a raw file", Args: cobra.NoArgs}
	cmd.Flags().DurationVar(&cfg.Bench.Runtime, "runtime", 10*time.Second, "time per fio job")
	cmd.Flags().Int64Var(&cfg.Bench.Size, "size", 1<<30, "export size in bytes")
	cmd.Flags().Int64Var(&cfg.BlockSize, "block-size", 0, "vdisk block size (default blockd's)")
	store := cmd.Flags().String("store", "disk", "chunk store under the vdisk: disk (one local disk store with fsync), mem, or cluster")
	cmd.Flags().IntVar(&cfg.Cluster, "nodes", 3, "storage nodes of --store cluster")
	cmd.Flags().StringVar(&cfg.Addr, "addr", "127.0.0.1", "IP the in-process NBD server listens on")
	def, more := nbdbench.JobNames()
	jobs := cmd.Flags().StringSlice("jobs", nil, "fio jobs to run (default the issue's: "+def+"; also "+more+")")
	targets := cmd.Flags().StringSlice("targets", nil, "targets (default zos,nbdkit-memory,qemu-nbd-raw)")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		switch *store {
		case "disk":
			cfg.Cluster = 0
		case "mem":
			cfg.Memory, cfg.Cluster = true, 0
		case "cluster":
		default:
			return fmt.Errorf("bench vdisk: --store %q: want disk, mem or cluster", *store)
		}
		w, err := nbdbench.Workloads(*jobs)
		if err != nil {
			return err
		}
		cfg.Bench.Workloads, cfg.Bench.Targets = w, *targets
		rep, err := vdiskbench.Run(c.Context(), cfg)
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), rep, func() { fmt.Fprint(c.OutOrStdout(), rep.Markdown()) })
	}
	return cmd
}
