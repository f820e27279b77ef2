package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench"
	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/bench/storebench"
	"github.com/zosproject/zos/bench/vdiskbench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks against their anchors (results as ratios; see docs/benchmarks.md)"}
	cmd.AddCommand(newBenchRaftCmd(), newBenchStoreCmd(), newBenchNBDCmd(), newBenchVdiskCmd(), newBenchFlistCmd(), newBenchAgentCmd(), newBenchVMCmd())
	all := &cobra.Command{Use: "all", Short: "Run every benchmark", Args: cobra.NoArgs}
	all.RunE = func(c *cobra.Command, args []string) error {
		for _, sub := range cmd.Commands() {
			if sub == c || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			fmt.Fprintf(c.OutOrStdout(), "== zos bench %s\n", sub.Name())
			sub.SetContext(c.Context())
			if err := sub.RunE(sub, nil); err != nil {
				return fmt.Errorf("bench %s: %w", sub.Name(), err)
			}
		}
		return nil
	}
	cmd.AddCommand(all)
	return cmd
}

func newBenchRaftCmd() *cobra.Command {
	var cfg bench.RaftConfig
	cmd := &cobra.Command{Use: "raft", Short: "Control-plane commits/s and p50/p99 commit latency on a 3-node loopback cluster", Args: cobra.NoArgs}
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 5*time.Second, "time per mode")
	cmd.Flags().IntVar(&cfg.Clients, "clients", 32, "concurrent proposers")
	cmd.Flags().IntVar(&cfg.Batch, "batch", 64, "commands per batched proposal")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		res, err := bench.Raft(c.Context(), cfg, c.ErrOrStderr())
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), res, func() {
			var rows [][]string
			for _, r := range res {
				rows = append(rows, []string{r.Mode, fmt.Sprint(r.Clients), fmt.Sprint(r.Batch), fmt.Sprintf("%.0f", r.OpsPerSec),
					r.P50.Round(10 * time.Microsecond).String(), r.P99.Round(10 * time.Microsecond).String(), fmt.Sprint(r.Errors),
					fmt.Sprintf("%.2f×", r.OpsPerSec/2000)})
			}
			table(c.OutOrStdout(), []string{"MODE", "CLIENTS", "BATCH", "OPS/S", "P50", "P99", "ERRORS", "VS AIM 2000/S"}, rows)
		})
	}
	return cmd
}

func newBenchStoreCmd() *cobra.Command {
	var cfg storebench.Config
	cmd := &cobra.Command{Use: "store", Short: "Chunk store PUT/GET and rebuild MB/s on a 6-node 4+2 loopback cluster vs raw reedsolomon + BLAKE3", Args: cobra.NoArgs}
	cmd.Flags().IntVar(&cfg.Nodes, "nodes", 6, "shard servers")
	cmd.Flags().Int64Var(&cfg.Bytes, "bytes", 256<<20, "data to put")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		res, err := storebench.Store(c.Context(), cfg)
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), res, func() { fmt.Fprint(c.OutOrStdout(), res.String()) })
	}
	return cmd
}

func newBenchNBDCmd() *cobra.Command {
	var cfg bench.NBDConfig
	cmd := &cobra.Command{Use: "nbd", Short: "fio over NBD: a vdisk on a 3-node cluster vs nbdkit memory vs qemu-nbd on a raw file", Args: cobra.NoArgs}
	cmd.Flags().DurationVar(&cfg.Runtime, "runtime", 10*time.Second, "time per fio job")
	cmd.Flags().Int64Var(&cfg.Size, "size", 1<<30, "export size in bytes")
	cmd.Flags().IntVar(&cfg.Nodes, "nodes", 3, "cluster nodes")
	cmd.Flags().Int64Var(&cfg.BlockSize, "block-size", 0, "vdisk block size (default blockd's)")
	cmd.Flags().StringSliceVar(&cfg.Workloads, "jobs", nil, "fio jobs to run (default the issue's: 4k-randrw-qd32,1m-seqread,1m-seqwrite,4k-randwrite-fsync16; also 4k-randwrite-fsync1-qd1)")
	cmd.Flags().StringSliceVar(&cfg.Anchors, "anchors", nil, "anchor targets (default nbdkit-memory,qemu-nbd-raw; \"none\" for zos alone)")
	cmd.Flags().StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the in-process cluster while the zos target runs")
	metrics := cmd.Flags().Bool("metrics", false, "print the serving node's blockd metrics (cache hits, flush phases) to stderr after the zos target")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if *metrics {
			cfg.Metrics = c.ErrOrStderr()
		}
		rep, err := bench.NBD(c.Context(), cfg)
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), rep, func() { fmt.Fprint(c.OutOrStdout(), rep.Markdown()) })
	}
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
	jobs := cmd.Flags().StringSlice("jobs", nil, "fio jobs to run (default the issue's: 4k-randrw-qd32,1m-seqread,1m-seqwrite,4k-randwrite-fsync16; also 4k-randwrite-fsync1-qd1)")
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

func newBenchFlistCmd() *cobra.Command {
	var cfg bench.FlistConfig
	cmd := &cobra.Command{Use: "flist", Short: "flist cold start vs tar.gz download, warm read vs native disk, stat walk vs source", Args: cobra.NoArgs}
	cmd.Flags().StringVar(&cfg.Root, "root", "", "root file system to serve (default: the tests' Debian tree, else busybox)")
	cmd.Flags().StringVar(&cfg.Binary, "binary", "", "file inside --root read first for the cold start")
	cmd.Flags().Int64Var(&cfg.WarmSize, "warm-size", 100<<20, "size of the file read warm")
	out := addOutputFlag(cmd)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		res, err := bench.Flist(c.Context(), cfg)
		if err != nil {
			return err
		}
		return output(*out, c.OutOrStdout(), res, func() {
			w := c.OutOrStdout()
			cs, wr, sw := res.ColdStart, res.WarmRead, res.StatWalk
			fmt.Fprintf(w, "root file system: %s (%d files)\n", res.Root, cs.Files)
			fmt.Fprintf(w, "cold start: mount over the hub + first read %v vs download+extract of the %s tar.gz %v: %.3fx (aim <= 0.1x)\n",
				cs.Mount.Round(time.Millisecond), humanBytes(cs.TarGzBytes), cs.Anchor.Round(time.Millisecond), cs.Ratio)
			fmt.Fprintf(w, "warm read of %s: mount %.0f MB/s vs native %.0f MB/s: %.2fx (aim >= 0.8x; passthrough %v)\n",
				humanBytes(wr.Bytes), wr.MountMBps, wr.NativeMBps, wr.Ratio, wr.Passthrough)
			fmt.Fprintf(w, "stat walk of %d files: mount %.0f/s (warm %.0f/s) vs source %.0f/s: %.2fx\n",
				sw.Files, sw.MountPerSec, sw.MountWarmPerS, sw.SourcePerSec, sw.Ratio)
		})
	}
	return cmd
}
