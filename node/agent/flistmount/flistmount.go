package flistmount

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	ffuse "github.com/zosproject/zos/flist/fuse"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/node/agent"
)

// Config configures the flist commands.
type Config struct {
	// Open opens an flist by url and returns the fetcher of its chunks.
	Open func(ctx context.Context, url string) (*flist.Reader, chunkstore.Fetcher, error)
	// Cache is the node's shared chunk cache (nil: memory only).
	Cache  *cache.Cache
	Logger *slog.Logger
}

// MountArgs are flist.mount's arguments.
type MountArgs struct {
	URL    string `json:"url"`
	Target string `json:"target"`
	RW     bool   `json:"rw"`
}

// TargetArgs are flist.unmount's arguments.
type TargetArgs struct {
	Target string `json:"target"`
}

// Mounts owns the agent's flist mounts.
type Mounts struct {
	cfg    Config
	log    *slog.Logger
	mu     sync.Mutex
	mounts map[string]*mount
}

type mount struct {
	m   *ffuse.Mounted
	r   *flist.Reader
	url string
}

// Register adds flist.mount, flist.unmount and flist.list to m.
func Register(m *agent.Manager, cfg Config) *Mounts {
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	fm := &Mounts{cfg: cfg, log: cfg.Logger.With("component", "flist-mounts"), mounts: map[string]*mount{}}
	m.Register("flist.mount", func(ctx context.Context, j *agent.Job) (any, error) {
		var a MountArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		return nil, fm.Mount(ctx, a)
	})
	m.Register("flist.unmount", func(ctx context.Context, j *agent.Job) (any, error) {
		var a TargetArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		return nil, fm.Unmount(ctx, a.Target)
	})
	m.Register("flist.list", func(ctx context.Context, j *agent.Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		return fm.List(), nil
	})
	return fm
}

// Mount mounts a.URL at a.Target.
func (fm *Mounts) Mount(ctx context.Context, a MountArgs) error {
	if a.URL == "" || a.Target == "" {
		return agent.Argf("url and target are required")
	}
	if !filepath.IsAbs(a.Target) {
		return agent.Argf("target %q must be an absolute path", a.Target)
	}
	target := filepath.Clean(a.Target)
	fm.mu.Lock()
	_, busy := fm.mounts[target]
	fm.mu.Unlock()
	if busy {
		return fmt.Errorf("%s: %w", target, ffuse.ErrBusy)
	}
	if fm.cfg.Open == nil {
		return fmt.Errorf("flist mounts are not available on this node")
	}
	r, fetcher, err := fm.cfg.Open(ctx, a.URL)
	if err != nil {
		return fmt.Errorf("open flist %s: %w", a.URL, err)
	}
	mt, err := ffuse.Mount(ffuse.Config{Mountpoint: target, Flist: r, Store: fetcher, Cache: fm.cfg.Cache, RW: a.RW,
		Name: "zos-flist:" + a.URL, Logger: fm.cfg.Logger})
	if err != nil {
		r.Close()
		return err
	}
	fm.mu.Lock()
	fm.mounts[target] = &mount{m: mt, r: r, url: a.URL}
	fm.mu.Unlock()
	fm.log.Info("flist mounted", "url", a.URL, "target", target, "rw", a.RW)
	return nil
}

// Unmount unmounts the flist at target.
func (fm *Mounts) Unmount(ctx context.Context, target string) error {
	target = filepath.Clean(target)
	fm.mu.Lock()
	mt := fm.mounts[target]
	delete(fm.mounts, target)
	fm.mu.Unlock()
	if mt == nil {
		return fmt.Errorf("no flist mounted by the agent at %s", target)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := mt.m.Unmount(ctx)
	mt.r.Close()
	return err
}

// MountInfo describes a mount (flist.list).
type MountInfo struct {
	URL    string `json:"url"`
	Target string `json:"target"`
}

// List returns the agent's mounts.
func (fm *Mounts) List() []MountInfo {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	out := []MountInfo{}
	for t, m := range fm.mounts {
		out = append(out, MountInfo{URL: m.url, Target: t})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Target < out[b].Target })
	return out
}

// Close unmounts everything.
func (fm *Mounts) Close() error {
	for _, m := range fm.List() {
		if err := fm.Unmount(context.Background(), m.Target); err != nil {
			fm.log.Warn("unmount at shutdown", "target", m.Target, "err", err)
		}
	}
	return nil
}
