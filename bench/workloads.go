package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/bench/storebench"
	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/orchestrator/client"
)

// StoreAPIConfig configures StoreAPI.
type StoreAPIConfig struct {
	Sizes       []int // blob sizes; default storebench.DefaultSizes
	Bytes       int64 // per size; default 32 MiB
	Concurrency int   // default 8
	Progress    func(string)
}

// StoreAPI measures blob PUT and GET through a cluster's API (HTTP, the
// node splits and erasure-codes), pinned with the note Prefix+"store" and
// unpinned afterwards, against the same anchors as storebench.Matrix.
func StoreAPI(ctx context.Context, cl *Cluster, cfg StoreAPIConfig) (report.Workload, error) {
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = storebench.DefaultSizes
	}
	if cfg.Bytes == 0 {
		cfg.Bytes = 32 << 20
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 8
	}
	progress := orNop(cfg.Progress)
	w := report.Workload{Name: "store", Measures: "Blob PUT/GET through the API of the " + cl.Desc + " (HTTP to one node, which chunks, erasure-codes and stores with fsync); anchors: reedsolomon encode + BLAKE3 on one core and the local disk's durable write ceiling, on this machine."}
	var (
		mu   sync.Mutex
		refs []chunkstore.Ref
	)
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		for _, r := range refs {
			_ = cl.API.Unpin(cctx, r)
		}
		cl.sweep(ctx)
	}()
	tmp, err := os.MkdirTemp("", "zos-bench-disk-")
	if err != nil {
		return w, err
	}
	defer os.RemoveAll(tmp)
	p := chunkstore.Profile{K: 4, M: 2}
	disk, err := storebench.DiskCeiling(tmp, p, 6, min(cfg.Bytes, 32<<20))
	if err != nil {
		return w, err
	}
	for _, size := range cfg.Sizes {
		n := int(max(cfg.Bytes/int64(size), 8))
		a, err := storebench.Anchor(p, min(size, chunkstore.MaxChunkSize), min(cfg.Bytes, 32<<20))
		if err != nil {
			return w, err
		}
		anchor := report.Result{Target: storebench.AnchorCodec, Anchor: true, Value: a, MBps: a}
		mine := make([]chunkstore.Ref, n)
		progress(fmt.Sprintf("store: PUT %d blobs of %s through the API", n, human(int64(size))))
		put, err := timedAPI(ctx, n, cfg.Concurrency, size, func(i int) error {
			buf := make([]byte, size)
			binary.LittleEndian.PutUint64(buf, uint64(time.Now().UnixNano())+uint64(i))
			res, err := cl.API.PutBlob(ctx, bytes.NewReader(buf), client.PutBlobOptions{Note: cl.Prefix + "store"})
			if err == nil {
				mine[i] = res.Ref
				mu.Lock()
				refs = append(refs, res.Ref)
				mu.Unlock()
			}
			return err
		})
		if err != nil {
			return w, fmt.Errorf("store: put: %w", err)
		}
		w.Jobs = append(w.Jobs, report.Job{Name: "PUT " + human(int64(size)), Unit: "MB/s", Results: []report.Result{put, anchor,
			{Target: storebench.AnchorDisk, Anchor: true, Value: disk, MBps: disk}}})
		progress(fmt.Sprintf("store: GET %d blobs of %s through the API", n, human(int64(size))))
		get, err := timedAPI(ctx, n, cfg.Concurrency, size, func(i int) error {
			body, _, err := cl.API.GetBlob(ctx, mine[i])
			if err != nil {
				return err
			}
			defer body.Close()
			got, err := io.Copy(io.Discard, body)
			if err == nil && got != int64(size) {
				err = fmt.Errorf("blob %d: %d bytes", i, got)
			}
			return err
		})
		if err != nil {
			return w, fmt.Errorf("store: get: %w", err)
		}
		w.Jobs = append(w.Jobs, report.Job{Name: "GET " + human(int64(size)), Unit: "MB/s", Results: []report.Result{get, anchor}})
	}
	w.Notes = append(w.Notes, "Degraded GET, rebuild and --kill-node need nodes this process can stop: run `zos bench store --dev`.")
	return w, nil
}

// RaftAPIConfig configures RaftAPI.
type RaftAPIConfig struct {
	Duration time.Duration // default 5s
	Clients  int           // default 32
	Progress func(string)
}

// RaftAim is the control plane's stated aim in commits per second.
const RaftAim = 2000

// RaftAPI measures key-value puts through a cluster's API: each is an HTTP
// request to one node, forwarded to the leader and committed by Raft
// (fsync'd on a quorum) before it answers; namespace Prefix+"raft", its
// keys deleted afterwards.
func RaftAPI(ctx context.Context, cl *Cluster, cfg RaftAPIConfig) (report.Workload, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Clients == 0 {
		cfg.Clients = 32
	}
	ns := cl.Prefix + "raft"
	w := report.Workload{Name: "raft", Measures: fmt.Sprintf("Key-value puts through the API of the %s, %d concurrent clients for %v: each an HTTP request committed by Raft on a quorum before it answers; the anchor is the stated aim of %d commits/s.", cl.Desc, cfg.Clients, cfg.Duration, RaftAim)}
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		ents, _ := cl.API.KVList(cctx, ns)
		for _, e := range ents {
			_ = cl.API.KVDelete(cctx, ns, e.Key)
		}
	}()
	orNop(cfg.Progress)(fmt.Sprintf("raft: kv puts through the API, %d clients, %v", cfg.Clients, cfg.Duration))
	rctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	start := time.Now()
	for c := range cfg.Clients {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for i := 0; rctx.Err() == nil; i++ {
				t0 := time.Now()
				if _, err := cl.API.KVPut(rctx, ns, fmt.Sprintf("c%d-%d", c, i%16), []byte("v"), nil); err != nil {
					if rctx.Err() == nil {
						bad++
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat, errs = append(lat, mine...), errs+bad
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return w, ctx.Err()
	}
	if len(lat) == 0 {
		return w, fmt.Errorf("raft: no put succeeded (%d errors)", errs)
	}
	ops := float64(len(lat)) / time.Since(start).Seconds()
	w.Jobs = append(w.Jobs, report.Job{Name: "kv put", Unit: "commits/s", Results: []report.Result{
		{Target: report.Zos, Value: ops, OpsPerSec: ops, Latency: storebench.Percentiles(lat)},
		{Target: "aim", Anchor: true, Value: RaftAim, OpsPerSec: RaftAim}}})
	if errs > 0 {
		w.Notes = append(w.Notes, fmt.Sprintf("%d puts failed", errs))
	}
	return w, nil
}

// RaftWorkload turns the in-process Raft benchmark's results into a
// workload (anchor: the stated aim).
func RaftWorkload(res []RaftResult, cfg RaftConfig) report.Workload {
	w := report.Workload{Name: "raft", Measures: fmt.Sprintf("Commits/s of kv-put commands applied directly to Raft on an embedded 3-node cluster (loopback TCP, pebble log with fsync), %d clients; batched = %d commands per log entry; forwarded = proposed on a follower. Anchor: the stated aim of %d commits/s.", cfg.Clients, cfg.Batch, RaftAim)}
	for _, r := range res {
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		w.Jobs = append(w.Jobs, report.Job{Name: r.Mode, Unit: "commits/s", Results: []report.Result{
			{Target: report.Zos, Value: r.OpsPerSec, OpsPerSec: r.OpsPerSec, Latency: &report.Latency{P50: us(r.P50), P99: us(r.P99), P999: us(r.P999)}},
			{Target: "aim", Anchor: true, Value: RaftAim, OpsPerSec: RaftAim}}})
	}
	return w
}

// NBDAPIConfig configures NBDAPI.
type NBDAPIConfig struct {
	Runtime time.Duration // per fio job; default 10s
	// Size of the vdisk and anchors beyond the caches; default
	// DefaultBeyondSize.
	Size int64
	// WithinSize is a second, smaller size the jobs also run at, within
	// the caches; default DefaultWithinSize; negative skips it, as does a
	// WithinSize not below Size.
	WithinSize int64
	BlockSize  int64 // of the vdisk; 0: blockd's default
	Workloads  []nbdbench.Workload
	Anchors    []string // default nbdkit-memory, qemu-nbd-raw
	// CPUProfile, if set, receives a CPU profile of this process while
	// the jobs run on zos (the nodes run in it only when embedded).
	CPUProfile string
	// Metrics, if set, receives the serving node's blockd, chunk store, shard store and server, journal and NBD metrics
	// after the jobs ran on zos (embedded clusters only): cache hits,
	// flush phases, write stalls.
	Metrics  io.Writer
	Progress func(string)

	profile *os.File // CPUProfile, open while NBDAPI runs
}

// DefaultWithinSize is the nbd size within blockd's caches: half of the
// default block cache (which is also capped at 1/8 of memory, and never
// below the vdisk's dirty-block budget of the same default).
const DefaultWithinSize = blockd.DefaultBlockCacheBytes / 2

// DefaultBeyondSize is the nbd size beyond blockd's caches: twice the
// default block cache plus its dirty-block budget.
const DefaultBeyondSize = 2 * (blockd.DefaultBlockCacheBytes + blockd.DefaultMaxDirtyBytes)

// NBDAPI creates vdisks Prefix+"nbd-SIZE" on the cluster, one per size
// (within the caches and beyond them), runs fio's nbd engine against each
// through the cluster's NBD server and against the anchors of the same
// size on this machine, and deletes the vdisks. Job names carry the size.
func NBDAPI(ctx context.Context, cl *Cluster, cfg NBDAPIConfig) (report.Workload, error) {
	if cfg.Size == 0 {
		cfg.Size = DefaultBeyondSize
	}
	if cfg.WithinSize == 0 {
		cfg.WithinSize = DefaultWithinSize
	}
	if cfg.Anchors == nil {
		cfg.Anchors = []string{nbdbench.TargetNbdkit, nbdbench.TargetQemuNBD}
	}
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = nbdbench.DefaultWorkloads
	}
	sizes := []int64{cfg.Size}
	if cfg.WithinSize > 0 && cfg.WithinSize < cfg.Size {
		sizes = []int64{cfg.WithinSize, cfg.Size}
	}
	var names []string
	for _, s := range sizes {
		names = append(names, human(s))
	}
	w := report.Workload{Name: "nbd", Measures: fmt.Sprintf("fio (nbd engine) on vdisks of %s of the %s through its NBD server at %s, against nbdkit memory and qemu-nbd on a raw file of the same size on this machine, in the same run; each size after a 1 MiB sequential fill. %s is within blockd's default caches (block cache %s, dirty budget %s per vdisk, each capped at 1/8 of memory), %s %s.",
		strings.Join(names, " and "), cl.Desc, cl.NBDAddr, names[0], human(blockd.DefaultBlockCacheBytes), human(blockd.DefaultMaxDirtyBytes), names[len(names)-1], beyond(cfg.Size))}
	if len(sizes) == 1 {
		w.Measures = fmt.Sprintf("fio (nbd engine) on a %s vdisk of the %s through its NBD server at %s, against nbdkit memory and qemu-nbd on a raw file of the same size on this machine, in the same run; after a 1 MiB sequential fill.", names[0], cl.Desc, cl.NBDAddr)
	}
	if cl.NBDAddr == "" {
		return w, errors.New("nbd: the cluster reports no NBD address")
	}
	if err := NeedTools(false, append([]string{"fio"}, cfg.Anchors...)...); err != nil {
		return w, err
	}
	dir, err := os.MkdirTemp("", "zos-bench-nbd-")
	if err != nil {
		return w, err
	}
	defer os.RemoveAll(dir)
	progress := orNop(cfg.Progress)
	progress(fmt.Sprintf("nbd: %d fio jobs × %d targets × %d sizes, %v each", len(cfg.Workloads), 1+len(cfg.Anchors), len(sizes), cfg.Runtime))
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return w, err
		}
		defer f.Close()
		cfg.profile = f
	}
	var ceil nbdCeiling
	if cl.Embedded {
		// The nodes' disk and CPUs are this machine's: its ceilings, in
		// the same run, say how close each figure is to them.
		progress("nbd: disk ceiling")
		if ceil, err = measureCeiling(cl.dir, len(cl.dev.Nodes), min(512<<20, cfg.Size)); err != nil {
			return w, err
		}
	}
	for _, size := range sizes {
		rep, err := nbdSize(ctx, cl, cfg, size, dir)
		if rep != nil {
			NBDWorkload(rep, &w, sizeSuffix(size, len(sizes)))
		}
		if err != nil {
			return w, err
		}
	}
	if ceil.fresh > 0 {
		// Sequential writes reach the disk's rate only beyond the
		// write-back cache, which holds what the disk has not taken yet.
		w.Notes = append(w.Notes, ceil.notes(w.Jobs, cfg.Size > blockd.DefaultMaxDirtyBytes, sizeSuffix(cfg.Size, len(sizes)))...)
	}
	return w, nil
}

// nbdCeiling is the machine's physical ceiling for the nbd jobs: its
// disk's durable write rates (guest MB/s through the dev cluster's
// profile) and its CPUs.
type nbdCeiling struct {
	profile          chunkstore.Profile
	fresh, overwrite float64 // best of three, guest MB/s
	cpus             int
}

// measureCeiling measures the disk under dir as the dev cluster's nodes
// use it: one file per node written in parallel with its profile's shard
// bytes of size guest bytes, synced, first fresh (as the chunk store
// appends) and then in place (as qemu-nbd overwrites its filled raw file).
func measureCeiling(dir string, nodes int, size int64) (nbdCeiling, error) {
	c := nbdCeiling{profile: chunkstore.DefaultProfile(nodes), cpus: runtime.NumCPU()}
	for range 3 {
		f, o, err := storebench.DiskRates(dir, c.profile, nodes, size)
		if err != nil {
			return c, err
		}
		c.fresh, c.overwrite = max(c.fresh, f), max(c.overwrite, o)
	}
	return c, nil
}

// notes says the ceilings and, if beyond, how close zos's sequential
// writes of the jobs named with suffix (the size beyond the write-back
// cache) come to the disk's.
func (c nbdCeiling) notes(jobs []report.Job, beyond bool, suffix string) []string {
	const mib = 1 << 20 / 1e6
	out := []string{fmt.Sprintf("Ceilings of this machine in this run: %d CPUs (the CPU busy column: the machine's, every process counted; near %d a job is bound by the CPU); the disk takes %.0f MiB/s of guest data durably into new blocks and %.0f MiB/s over blocks written before (%s shards: %d files written in parallel, 4 MiB writes, one fdatasync each; best of three). The chunk store appends, so new blocks are its ceiling; qemu-nbd overwrites its filled raw file in place.",
		c.cpus, c.cpus, c.fresh/mib, c.overwrite/mib, c.profile, c.profile.N())}
	for _, j := range jobs {
		base, _, _ := strings.Cut(strings.TrimSuffix(j.Name, suffix), "#")
		if !beyond || base != "1m-seqwrite" || !strings.HasSuffix(j.Name, suffix) {
			continue
		}
		for _, r := range j.Results {
			if r.Target == report.Zos && r.MBps > 0 {
				out = append(out, fmt.Sprintf("%s on zos: %.0f MiB/s, %.0f%% of the disk's ceiling for new blocks.", j.Name, r.MBps/mib, 100*r.MBps/c.fresh))
			}
		}
	}
	return out
}

func beyond(size int64) string {
	if size > blockd.DefaultBlockCacheBytes {
		return "beyond them"
	}
	return "smaller than the block cache: a short run, not beyond the caches"
}

func sizeSuffix(size int64, sizes int) string {
	if sizes == 1 {
		return ""
	}
	return " @ " + human(size)
}

// nbdSize runs the jobs at one size: on a vdisk of the cluster (profiled
// and its metrics written if asked), then on the anchors.
func nbdSize(ctx context.Context, cl *Cluster, cfg NBDAPIConfig, size int64, dir string) (*nbdbench.Report, error) {
	name := fmt.Sprintf("%snbd-%dm", cl.Prefix, size>>20)
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		_ = cl.API.DeleteVDisk(cctx, name, true)
		cl.sweep(ctx) // a create cancelled after the server made the vdisk
	}()
	if _, err := cl.API.CreateVDisk(ctx, vdiskapi.CreateRequest{Name: name, Size: vdiskapi.Size(size), BlockSize: vdiskapi.Size(cfg.BlockSize)}); err != nil {
		return nil, fmt.Errorf("nbd: create vdisk: %w", err)
	}
	bc := nbdbench.Config{Runtime: cfg.Runtime, Size: size, Dir: dir, ZosURI: fmt.Sprintf("nbd://%s/%s", cl.NBDAddr, name),
		Targets: []string{nbdbench.TargetZos}, Workloads: cfg.Workloads, Logger: progressLogger(cfg.Progress)}
	if cfg.profile != nil {
		if err := pprof.StartCPUProfile(cfg.profile); err != nil {
			return nil, err
		}
	}
	rep, err := nbdbench.Run(ctx, bc)
	if cfg.profile != nil {
		pprof.StopCPUProfile()
	}
	if cfg.Metrics != nil && cl.dev != nil {
		fmt.Fprintf(cfg.Metrics, "# %s after the jobs at %s\n", cl.dev.Nodes[0].Config().Bind, human(size))
		writeMetrics(cfg.Metrics, cl.dev.Nodes[0].Registry(), "zos_blockd_", "zos_chunk_", "zos_nbd_requests_total", "zos_journal_", "zos_disk_", "zos_shard_server_request_seconds")
	}
	if err != nil || len(cfg.Anchors) == 0 {
		return rep, err
	}
	bc.Targets, bc.ZosURI = cfg.Anchors, ""
	more, err := nbdbench.Run(ctx, bc)
	if more != nil {
		rep.Targets = append(rep.Targets, more.Targets...)
		rep.Results = append(rep.Results, more.Results...)
	}
	return rep, err
}

// NBDWorkload adds an nbdbench report's results to w as jobs named with
// suffix: IOPS for 4k jobs, MiB/s for the others.
func NBDWorkload(rep *nbdbench.Report, w *report.Workload, suffix string) {
	for _, name := range rep.Workloads {
		j := report.Job{Name: name + suffix, Unit: "IOPS"}
		for _, r := range rep.Results {
			if r.Workload != name {
				continue
			}
			if len(name) > 2 && name[:2] != "4k" {
				j.Unit = "MiB/s"
			}
			v := r.IOPS()
			if j.Unit == "MiB/s" {
				v = r.MiBps()
			}
			res := report.Result{Target: r.Target, Anchor: r.Target != nbdbench.TargetZos, Value: v, OpsPerSec: r.IOPS(), MBps: r.MiBps() * 1.048576, CPU: r.CPUCores}
			if r.P99Micros > 0 {
				res.Latency = &report.Latency{P50: r.P50Micros, P99: r.P99Micros, P999: r.P999Micros}
			}
			j.Results = append(j.Results, res)
		}
		if len(j.Results) > 0 {
			w.Jobs = append(w.Jobs, j)
		}
	}
}

// Packages maps the external tools the workloads run to their Debian
// packages.
var Packages = map[string]string{
	"fio": "fio", "nbdkit": "nbdkit", nbdbench.TargetNbdkit: "nbdkit", "qemu-nbd": "qemu-utils", nbdbench.TargetQemuNBD: "qemu-utils",
	"tar": "tar", "busybox": "busybox-static",
}

// ErrMissingTool is returned by NeedTools.
var ErrMissingTool = errors.New("bench: tool not installed")

// lookPath is exec.LookPath; tests replace it.
var lookPath = exec.LookPath

// NeedTools checks that the tools (fio, nbdkit, qemu-nbd, or the anchors
// named by target) are on PATH; with install, as root, it runs apt-get for
// the missing ones first.
func NeedTools(install bool, tools ...string) error {
	var missing, pkgs []string
	for _, t := range tools {
		bin := t
		switch t {
		case nbdbench.TargetNbdkit:
			bin = "nbdkit"
		case nbdbench.TargetQemuNBD:
			bin = "qemu-nbd"
		}
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
			if !slices.Contains(pkgs, Packages[t]) {
				pkgs = append(pkgs, Packages[t])
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if install {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%w: %v; --install-deps needs root (or: apt-get install -y %s)", ErrMissingTool, missing, join(pkgs))
		}
		cmd := exec.Command("apt-get", append([]string{"install", "-y"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("bench: apt-get install %s: %v: %s", join(pkgs), err, lastLines(out))
		}
		return NeedTools(false, tools...)
	}
	return fmt.Errorf("%w: %s (Debian package: %s; install with `apt-get install -y %s`, or rerun with --install-deps as root)", ErrMissingTool, join(missing), join(pkgs), join(pkgs))
}

func join(s []string) string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return fmt.Sprint(out)[1 : len(fmt.Sprint(out))-1]
}

func lastLines(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func orNop(f func(string)) func(string) {
	if f == nil {
		return func(string) {}
	}
	return f
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}

// timedAPI runs fn(0..n-1) on workers goroutines: bytes per second and
// per-call latency percentiles.
func timedAPI(ctx context.Context, n, workers, size int, fn func(i int) error) (report.Result, error) {
	lat := make([]time.Duration, n)
	var next int
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil
				mu.Unlock()
				if i >= n || stop || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := fn(i)
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	if first != nil {
		return report.Result{}, first
	}
	el := time.Since(start).Seconds()
	mbps := float64(n) * float64(size) / el / 1e6
	return report.Result{Target: report.Zos, Value: mbps, MBps: mbps, OpsPerSec: float64(n) / el, Latency: storebench.Percentiles(lat)}, nil
}

// progressLogger logs nbdbench's progress ("result" lines) to progress.
func progressLogger(progress func(string)) *slog.Logger {
	if progress == nil {
		return nil
	}
	return slog.New(progressHandler{progress})
}

type progressHandler struct{ fn func(string) }

func (h progressHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h progressHandler) Handle(_ context.Context, r slog.Record) error {
	s := "nbd: " + r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	h.fn(s)
	return nil
}
func (h progressHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h progressHandler) WithGroup(string) slog.Handler      { return h }
