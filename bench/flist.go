package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/zosproject/zos/bench/flistbench"
	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/flist/cache"
	ffuse "github.com/zosproject/zos/flist/fuse"
)

// FlistConfig configures the flist benchmarks.
type FlistConfig struct {
	// Root is the root file system to serve; default the Debian tree the
	// tests cache in /var/cache/zos-test/bookworm-minbase, else a busybox
	// tree. Binary is the file read first (cold start).
	Root, Binary string
	// WarmSize of the file read warm; default 100 MiB.
	WarmSize int64
}

// FlistResult holds the three measurements.
type FlistResult struct {
	Root      string                     `json:"root"`
	ColdStart flistbench.ColdStartResult `json:"cold_start"`
	WarmRead  flistbench.WarmReadResult  `json:"warm_read"`
	StatWalk  flistbench.StatWalkResult  `json:"stat_walk"`
}

// Flist measures cold start over the hub vs downloading and extracting the
// tar.gz, a warm sequential read through the mount vs the native disk, and
// a stat walk of the mount vs the source directory.
func Flist(ctx context.Context, cfg FlistConfig) (FlistResult, error) {
	work, err := os.MkdirTemp("", "zos-bench-flist-")
	if err != nil {
		return FlistResult{}, err
	}
	defer os.RemoveAll(work)
	if cfg.Root == "" {
		cfg.Root, cfg.Binary, err = defaultRoot(work)
		if err != nil {
			return FlistResult{}, err
		}
	}
	if cfg.WarmSize == 0 {
		cfg.WarmSize = 100 << 20
	}
	res := FlistResult{Root: cfg.Root}
	for _, d := range []string{"cold", "warm", "walk"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return res, err
		}
	}
	if res.ColdStart, err = flistbench.ColdStart(ctx, flistbench.ColdStartConfig{Root: cfg.Root, Binary: cfg.Binary, WorkDir: filepath.Join(work, "cold")}); err != nil {
		return res, fmt.Errorf("cold start: %w", err)
	}
	if res.WarmRead, err = flistbench.WarmRead(ctx, filepath.Join(work, "warm"), cfg.WarmSize); err != nil {
		return res, fmt.Errorf("warm read: %w", err)
	}
	if res.StatWalk, err = flistbench.StatWalk(ctx, cfg.Root, filepath.Join(work, "walk")); err != nil {
		return res, fmt.Errorf("stat walk: %w", err)
	}
	return res, nil
}

func defaultRoot(work string) (root, binary string, err error) {
	base := os.Getenv("ZOS_TEST_CACHE")
	if base == "" {
		base = "/var/cache/zos-test"
	}
	if d := filepath.Join(base, "bookworm-minbase"); exists(filepath.Join(d, "usr/bin/bash")) {
		return d, "/usr/bin/bash", nil
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", "", fmt.Errorf("no root file system: pass --root, or install busybox-static")
	}
	dir := filepath.Join(work, "busybox-root")
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	data, err := os.ReadFile(bb)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		return "", "", err
	}
	if out, err := exec.Command("chroot", dir, "/bin/busybox", "--install", "-s").CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("busybox --install: %v: %s", err, out)
	}
	return dir, "/bin/busybox", nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// FlistAPI measures flists through a cluster's hub: Root (default as
// Flist's) is uploaded as a tar.gz to the hub as Prefix+"flist" (the node
// converts it, chunks into the erasure-coded store); cold start is opening
// it from the hub, mounting it with an empty cache and reading Binary
// whole, against downloading the same tar.gz over HTTP on this machine and
// extracting it; warm read is reading Binary again through the mount
// against the native file; stat walk is `find | xargs stat` of the mount
// against the source tree. The flist is deleted afterwards.
func FlistAPI(ctx context.Context, cl *Cluster, cfg FlistConfig, progress func(string)) (report.Workload, error) {
	progress = orNop(progress)
	w := report.Workload{Name: "flist", Measures: "An flist of a root file system uploaded to the hub of the " + cl.Desc + " and mounted over FUSE with an empty cache: cold start (open + mount + first read of a binary) vs downloading the tar.gz over local HTTP and extracting it; warm read of the binary vs native disk; stat walk of every file vs the source tree."}
	work, err := os.MkdirTemp("", "zos-bench-flist-")
	if err != nil {
		return w, err
	}
	defer os.RemoveAll(work)
	if cfg.Root == "" {
		if cfg.Root, cfg.Binary, err = defaultRoot(work); err != nil {
			return w, err
		}
	}
	if cfg.Binary == "" {
		return w, fmt.Errorf("flist: --binary: a file inside --root to read")
	}
	tgz := filepath.Join(work, "rootfs.tar.gz")
	progress("flist: tar.gz of " + cfg.Root)
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "-czf", tgz, "-C", cfg.Root, ".").CombinedOutput(); err != nil {
		return w, fmt.Errorf("tar: %v: %s", err, out)
	}
	h := cl.API.Hub()
	name := cl.Prefix + "flist"
	f, err := os.Open(tgz)
	if err != nil {
		return w, err
	}
	progress("flist: upload to the cluster's hub as " + name)
	up, err := h.UploadArchive(ctx, "", name, "rootfs.tar.gz", f)
	f.Close()
	defer cl.sweep(ctx) // an upload the hub finished after an interrupt
	if err != nil {
		return w, fmt.Errorf("flist: upload: %w", err)
	}
	defer func() {
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		_ = h.Delete(cctx, up.Entry.Repo, up.Entry.Name)
	}()
	progress("flist: cold start (anchor: download + extract)")
	anchor, err := flistbench.DownloadExtract(ctx, tgz, filepath.Join(work, "extract"), cfg.Binary)
	if err != nil {
		return w, err
	}
	start := time.Now()
	fr, err := h.Open(ctx, up.Flist)
	if err != nil {
		return w, err
	}
	defer fr.Close()
	c, err := cache.Open(cache.Config{Dir: filepath.Join(work, "cache"), MaxBytes: 1 << 30})
	if err != nil {
		return w, err
	}
	defer c.Close()
	m, err := ffuse.Mount(ffuse.Config{Mountpoint: filepath.Join(work, "mnt"), Flist: fr, Store: h, Cache: c})
	if err != nil {
		return w, err
	}
	defer m.Unmount(context.Background())
	bin := filepath.Join(m.Dir(), cfg.Binary)
	if _, err := os.ReadFile(bin); err != nil {
		return w, err
	}
	cold := time.Since(start)
	w.Jobs = append(w.Jobs, report.Job{Name: "cold start", Unit: "s", LowerIsBetter: true, Results: []report.Result{
		{Target: report.Zos, Value: cold.Seconds()}, {Target: "tar.gz-extract", Anchor: true, Value: anchor.Seconds()}}})
	progress("flist: warm read and stat walk")
	mountRead, size, err := bestRead(bin)
	if err != nil {
		return w, err
	}
	nativeRead, _, err := bestRead(filepath.Join(cfg.Root, cfg.Binary))
	if err != nil {
		return w, err
	}
	mb := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	w.Jobs = append(w.Jobs, report.Job{Name: "warm read", Unit: "MB/s", Results: []report.Result{
		{Target: report.Zos, Value: mb(mountRead), MBps: mb(mountRead)}, {Target: "native-disk", Anchor: true, Value: mb(nativeRead), MBps: mb(nativeRead)}}})
	files, srcRate, err := flistbench.Walk(ctx, cfg.Root, 0)
	if err != nil {
		return w, err
	}
	_, mntRate, err := flistbench.Walk(ctx, m.Dir(), files)
	if err != nil {
		return w, err
	}
	w.Jobs = append(w.Jobs, report.Job{Name: "stat walk", Unit: "files/s", Results: []report.Result{
		{Target: report.Zos, Value: mntRate, OpsPerSec: mntRate}, {Target: "source-tree", Anchor: true, Value: srcRate, OpsPerSec: srcRate}}})
	w.Notes = append(w.Notes, fmt.Sprintf("root %s: %d files, tar.gz %s; binary %s (%d bytes)", cfg.Root, up.Stats.Files, humanFile(tgz), cfg.Binary, size))
	return w, nil
}

func bestRead(p string) (time.Duration, int64, error) {
	best := time.Duration(1 << 62)
	var n int64
	for range 3 {
		t0 := time.Now()
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, 0, err
		}
		n = int64(len(b))
		best = min(best, time.Since(t0))
	}
	return best, n, nil
}

func humanFile(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "?"
	}
	return human(st.Size())
}

// FlistWorkload turns the in-memory-hub flist benchmark into a workload.
func FlistWorkload(res FlistResult) report.Workload {
	cs, wr, sw := res.ColdStart, res.WarmRead, res.StatWalk
	return report.Workload{Name: "flist", Measures: "flist benchmarks over an in-memory hub on this machine (zos bench flist --local).", Jobs: []report.Job{
		{Name: "cold start", Unit: "s", LowerIsBetter: true, Results: []report.Result{{Target: report.Zos, Value: cs.Mount.Seconds()}, {Target: "tar.gz-extract", Anchor: true, Value: cs.Anchor.Seconds()}}},
		{Name: "warm read", Unit: "MB/s", Results: []report.Result{{Target: report.Zos, Value: wr.MountMBps}, {Target: "native-disk", Anchor: true, Value: wr.NativeMBps}}},
		{Name: "stat walk", Unit: "files/s", Results: []report.Result{{Target: report.Zos, Value: sw.MountPerSec}, {Target: "source-tree", Anchor: true, Value: sw.SourcePerSec}}},
	}}
}
