package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/zosproject/zos/bench"
	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/bench/storebench"
	"github.com/zosproject/zos/internal/size"
	"github.com/zosproject/zos/orchestrator/client"
)

// benchOpts are the flags every report-producing workload shares.
type benchOpts struct {
	Cluster     string // API address of an existing cluster ("" = embedded)
	Dev         bool
	Nodes       int
	Duration    time.Duration
	Size        string // human size ("4G"); "" = the workload's default
	Out         string
	InstallDeps bool
	Output      string // table or json
}

func (o *benchOpts) size() (int64, error) {
	if o.Size == "" {
		return 0, nil
	}
	n, err := size.Parse(o.Size)
	if err != nil {
		return 0, fmt.Errorf("--size: %w", err)
	}
	return n, nil
}

func addBenchFlags(cmd *cobra.Command, o *benchOpts, nodes int, dur time.Duration, sizeHelp string) {
	f := cmd.Flags()
	f.StringVar(&o.Cluster, "cluster", "", "API address of an existing cluster to benchmark (token from $ZOS_TOKEN); it creates and removes its own bench-… objects")
	f.BoolVar(&o.Dev, "dev", false, "benchmark an embedded dev cluster (the default)")
	f.IntVar(&o.Nodes, "nodes", nodes, "nodes of the embedded cluster")
	f.DurationVar(&o.Duration, "duration", dur, "time per job")
	f.StringVar(&o.Size, "size", "", sizeHelp+" (human size: 64M, 4G)")
	f.StringVar(&o.Out, "out", "", "write DIR/report.md, DIR/results.json and DIR/plots/*.png,svg")
	f.BoolVar(&o.InstallDeps, "install-deps", false, "install missing tools (fio, nbdkit, qemu-utils) with apt-get (root)")
	f.StringVarP(&o.Output, "output", "o", "table", "output format: table or json")
}

// workloadFunc runs one workload and returns its results. `zos bench
// container` and `zos bench vm` plug in by returning report.Workload too.
type workloadFunc func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error)

// target returns the cluster the options name: an existing one (checked
// within seconds) or an embedded one.
func (o *benchOpts) target(ctx context.Context) (*bench.Cluster, error) {
	if o.Cluster != "" && o.Dev {
		return nil, fmt.Errorf("--cluster and --dev exclude each other")
	}
	if o.Cluster != "" {
		tc, err := client.EnvTLS()
		if err != nil {
			return nil, err
		}
		return bench.ConnectTLS(ctx, o.Cluster, os.Getenv("ZOS_TOKEN"), tc)
	}
	return bench.StartDev(ctx, o.Nodes)
}

// benchProgress prints a progress line per step with the time since start.
func benchProgress(w io.Writer) func(string) {
	start := time.Now()
	return func(s string) { fmt.Fprintf(w, "[%5.1fs] %s…\n", time.Since(start).Seconds(), s) }
}

// runWorkloads runs fns, prints each workload's table as it finishes, and
// with --out writes the report of them all.
func runWorkloads(c *cobra.Command, o *benchOpts, fns ...workloadFunc) error {
	rep := report.New(os.Args, "")
	progress := benchProgress(c.ErrOrStderr())
	if o.Cluster != "" {
		rep.Cluster = "cluster at " + o.Cluster
	} else {
		rep.Cluster = fmt.Sprintf("embedded clusters in this process (%d nodes unless a workload says otherwise)", o.Nodes)
	}
	for _, fn := range fns {
		ws, err := fn(c.Context(), o, progress)
		for _, w := range ws {
			rep.Add(w)
			if o.Output != "json" {
				fmt.Fprint(c.OutOrStdout(), rep.Workloads[len(rep.Workloads)-1].Markdown(nil, ""))
			}
		}
		if err != nil {
			return err
		}
	}
	if o.Output == "json" {
		b, _ := json.MarshalIndent(rep.Workloads, "", "  ")
		fmt.Fprintln(c.OutOrStdout(), string(b))
	}
	if o.Out != "" {
		if err := rep.Write(o.Out); err != nil {
			return err
		}
		fmt.Fprintf(c.ErrOrStderr(), "report: %s/report.md\n", o.Out)
	}
	return nil
}

func workloadCmd(use, short string, o *benchOpts, fn workloadFunc) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return runWorkloads(c, o, fn) }
	return cmd
}

func newBenchRaftCmd() *cobra.Command {
	o := &benchOpts{}
	var cfg bench.RaftConfig
	cmd := workloadCmd("raft", "Control-plane commits/s and p50/p99/p99.9 vs the aim of 2000/s (embedded: Raft directly; --cluster: kv puts through the API)", o, raftWorkload(&cfg))
	addBenchFlags(cmd, o, 3, 5*time.Second, "unused")
	cmd.Flags().IntVar(&cfg.Clients, "clients", 32, "concurrent proposers")
	cmd.Flags().IntVar(&cfg.Batch, "batch", 64, "commands per batched proposal (embedded)")
	return cmd
}

func raftWorkload(cfg *bench.RaftConfig) workloadFunc {
	return func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
		cfg.Duration = o.Duration
		if o.Cluster != "" {
			cl, err := o.target(ctx)
			if err != nil {
				return nil, err
			}
			w, err := bench.RaftAPI(ctx, cl, bench.RaftAPIConfig{Duration: o.Duration, Clients: cfg.Clients, Progress: progress})
			return []report.Workload{w}, err
		}
		res, err := bench.Raft(ctx, *cfg, progressWriter(progress))
		if err != nil {
			return nil, err
		}
		return []report.Workload{bench.RaftWorkload(res, *cfg)}, nil
	}
}

func newBenchStoreCmd() *cobra.Command {
	o := &benchOpts{}
	var cfg storebench.MatrixConfig
	cmd := workloadCmd("store", "Chunk PUT/GET of 16 KiB, 64 KiB, 4 MiB, degraded GET, rebuild vs reedsolomon+BLAKE3 and the disk ceiling (--kill-node: a node dies mid-run)", o,
		func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
			n, err := o.size()
			if err != nil {
				return nil, err
			}
			if o.Cluster != "" {
				if cfg.KillNode {
					return nil, fmt.Errorf("--kill-node needs the embedded cluster (--dev): it stops one of its nodes")
				}
				cl, err := o.target(ctx)
				if err != nil {
					return nil, err
				}
				w, err := bench.StoreAPI(ctx, cl, bench.StoreAPIConfig{Bytes: n, Progress: progress})
				return []report.Workload{w}, err
			}
			cfg.Nodes, cfg.Bytes, cfg.Duration, cfg.Progress = o.Nodes, n, o.Duration, progress
			w, err := storebench.Matrix(ctx, cfg)
			return []report.Workload{w}, err
		})
	addBenchFlags(cmd, o, 6, 6*time.Second, "data put per chunk size (default 64M; --cluster 32M)")
	cmd.Flags().BoolVar(&cfg.KillNode, "kill-node", false, "kill a node under load, replace its disk and rebuild (the throughput plot shows it)")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", 8, "concurrent writers/readers")
	return cmd
}

// nbdOpts are the flags of the nbd workload beyond benchOpts.
type nbdOpts struct {
	Jobs, Anchors []string
	Within        string // human size; "" = bench.DefaultWithinSize, "0" = none
	BlockSize     string
	CPUProfile    string
	Metrics       string // file; "-" = stderr
}

func (n *nbdOpts) addFlags(cmd *cobra.Command, prefix string) {
	def, more := nbdbench.JobNames()
	f := cmd.Flags()
	f.StringSliceVar(&n.Jobs, prefix+"jobs", nil, "fio jobs (default "+def+"; also "+more+")")
	f.StringVar(&n.Within, prefix+"within-size", "", fmt.Sprintf("the size within the caches the jobs also run at (default %s: half of blockd's default block cache; 0: none)", humanSize(bench.DefaultWithinSize)))
	if prefix == "" {
		f.StringSliceVar(&n.Anchors, "anchors", nil, "anchor targets (default nbdkit-memory,qemu-nbd-raw; \"none\" for zos alone)")
		f.StringVar(&n.BlockSize, "block-size", "", "vdisk block size (default blockd's)")
		f.StringVar(&n.CPUProfile, "cpuprofile", "", "write a CPU profile of this process while the jobs run on zos (embedded: the nodes run in it)")
		f.StringVar(&n.Metrics, "metrics", "", "write the serving node's blockd, chunk store, shard store and server, journal and NBD metrics after the jobs ran on zos to this file (\"-\": stderr; embedded only)")
	}
}

func nbdWorkload(n *nbdOpts) workloadFunc {
	return func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
		beyond, err := o.size()
		if err != nil {
			return nil, err
		}
		var within, bs int64
		if n.Within != "" {
			if within, err = size.Parse(n.Within); err != nil {
				return nil, fmt.Errorf("--within-size: %w", err)
			}
			if within == 0 {
				within = -1
			}
		}
		if n.BlockSize != "" {
			if bs, err = size.Parse(n.BlockSize); err != nil {
				return nil, fmt.Errorf("--block-size: %w", err)
			}
		}
		jobs, err := nbdbench.Workloads(n.Jobs)
		if err != nil {
			return nil, err
		}
		anchors := n.Anchors
		if anchors == nil {
			anchors = []string{nbdbench.TargetNbdkit, nbdbench.TargetQemuNBD}
		}
		if len(anchors) == 1 && anchors[0] == "none" {
			anchors = []string{}
		}
		if err := bench.NeedTools(o.InstallDeps, append([]string{"fio"}, anchors...)...); err != nil {
			return nil, err
		}
		cfg := bench.NBDAPIConfig{Runtime: o.Duration, Size: beyond, WithinSize: within, BlockSize: bs, Workloads: jobs, Anchors: anchors, CPUProfile: n.CPUProfile, Progress: progress}
		switch n.Metrics {
		case "":
		case "-":
			cfg.Metrics = os.Stderr
		default:
			f, err := os.Create(n.Metrics)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			cfg.Metrics = f
		}
		cl, err := o.target(ctx)
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		wl, err := bench.NBDAPI(ctx, cl, cfg)
		return []report.Workload{wl}, err
	}
}

func newBenchNBDCmd() *cobra.Command {
	o := &benchOpts{}
	n := &nbdOpts{}
	cmd := workloadCmd("nbd", "fio over NBD at a size within the caches and one beyond: a vdisk of the cluster vs nbdkit memory vs qemu-nbd on a raw file", o, nbdWorkload(n))
	addBenchFlags(cmd, o, 3, 10*time.Second, fmt.Sprintf("vdisk and anchor export size beyond the caches (default %s)", humanSize(bench.DefaultBeyondSize)))
	n.addFlags(cmd, "")
	return cmd
}

func newBenchFlistCmd() *cobra.Command {
	o := &benchOpts{}
	var cfg bench.FlistConfig
	var local bool
	cmd := workloadCmd("flist", "flist through the cluster's hub: cold start vs tar.gz download+extract, warm read vs native disk, stat walk vs the source tree", o,
		func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
			if local {
				n, err := o.size()
				if err != nil {
					return nil, err
				}
				cfg.WarmSize = n
				res, err := bench.Flist(ctx, cfg)
				if err != nil {
					return nil, err
				}
				return []report.Workload{bench.FlistWorkload(res)}, nil
			}
			cl, err := o.target(ctx)
			if err != nil {
				return nil, err
			}
			defer cl.Close()
			w, err := bench.FlistAPI(ctx, cl, cfg, progress)
			return []report.Workload{w}, err
		})
	addBenchFlags(cmd, o, 3, 0, "with --local: size of the file read warm (default 100M)")
	cmd.Flags().StringVar(&cfg.Root, "root", "", "root file system to serve (default: the tests' Debian tree, else busybox)")
	cmd.Flags().StringVar(&cfg.Binary, "binary", "", "file inside --root read first for the cold start")
	cmd.Flags().BoolVar(&local, "local", false, "an in-memory hub in this process instead of a cluster's")
	return cmd
}

func newBenchAllCmd(parent *cobra.Command) *cobra.Command {
	o := &benchOpts{}
	store := storebench.MatrixConfig{}
	raft := bench.RaftConfig{Clients: 32, Batch: 64}
	nbd := &nbdOpts{}
	var flist bench.FlistConfig
	var nbdSize string
	cmd := &cobra.Command{Use: "all", Short: "Run the store (with a node killed), nbd, flist and raft workloads into one report", Args: cobra.NoArgs}
	addBenchFlags(cmd, o, 3, 5*time.Second, "data per chunk size of the store workload")
	cmd.Flags().StringVar(&nbdSize, "nbd-size", "", fmt.Sprintf("nbd export size beyond the caches (default %s)", humanSize(bench.DefaultBeyondSize)))
	nbd.addFlags(cmd, "nbd-")
	cmd.Flags().StringVar(&flist.Root, "flist-root", "", "root file system of the flist workload (default: the tests' Debian tree, else busybox)")
	cmd.Flags().StringVar(&flist.Binary, "flist-binary", "", "file inside --flist-root read first for the cold start")
	var ct bench.ContainerConfig
	withContainer := cmd.Flags().Bool("container", true, "also run the container workload (it starts `zos node` processes of this binary)")
	cmd.Flags().StringVar(&ct.Root, "container-root", "", "root file system of the container workload (default: the tests' Debian tree, else busybox)")
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		storeFn := func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
			n, err := o.size()
			if err != nil {
				return nil, err
			}
			if o.Cluster != "" {
				cl, err := o.target(ctx)
				if err != nil {
					return nil, err
				}
				w, err := bench.StoreAPI(ctx, cl, bench.StoreAPIConfig{Bytes: n, Progress: progress})
				return []report.Workload{w}, err
			}
			store.Bytes, store.Duration, store.Progress, store.KillNode = n, o.Duration, progress, true
			w, err := storebench.Matrix(ctx, store)
			return []report.Workload{w}, err
		}
		nbdFn := func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
			no := *o
			no.Size = nbdSize
			return nbdWorkload(nbd)(ctx, &no, progress)
		}
		flistFn := func(ctx context.Context, o *benchOpts, progress func(string)) ([]report.Workload, error) {
			cl, err := o.target(ctx)
			if err != nil {
				return nil, err
			}
			defer cl.Close()
			w, err := bench.FlistAPI(ctx, cl, flist, progress)
			return []report.Workload{w}, err
		}
		fns := []workloadFunc{storeFn, nbdFn, flistFn, raftWorkload(&raft)}
		if *withContainer {
			fns = append(fns, containerWorkload(&ct, true))
		}
		return runWorkloads(c, o, fns...)
	}
	return cmd
}

func newBenchPublishCmd() *cobra.Command {
	return &cobra.Command{Use: "publish REPORT-DIR DOC PLOT-DIR", Short: "Copy a report's tables and plots into a markdown file between its markers (make bench)", Args: cobra.ExactArgs(3),
		RunE: func(c *cobra.Command, args []string) error { return report.Publish(args[0], args[1], args[2]) }}
}

// progressWriter turns progress lines written to an io.Writer into calls.
type progressWriter func(string)

func (p progressWriter) Write(b []byte) (int, error) {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '.' || s[len(s)-1] == 0x80 || s[len(s)-1] == 0xa6 || s[len(s)-1] == 0xe2) {
		s = s[:len(s)-1]
	}
	p(s)
	return len(b), nil
}

// humanSize writes n as --size takes it: 512M, 4G.
func humanSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprint(n)
}
