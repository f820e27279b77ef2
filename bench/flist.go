package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/zosproject/zos/bench/flistbench"
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
