package corex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	ffuse "github.com/zosproject/zos/flist/fuse"
	"github.com/zosproject/zos/node/container"
)

// pool shares one read-only FUSE mount per flist among containers.
type pool struct {
	dir   string
	open  func(ctx context.Context, url string) (*flist.Reader, chunkstore.Fetcher, error)
	cache *cache.Cache
	log   logger

	mu      sync.Mutex
	m       map[string]*shared
	leaving map[string]chan struct{} // key → closed when its last unmount is done
}

type logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
}

// shared is one mounted flist.
type shared struct {
	key, url, dir string
	refs          int
	ready         chan struct{}
	err           error
	mt            *ffuse.Mounted
	r             *flist.Reader
	image         *container.Image
}

// flistKey normalises an flist reference: REPO/NAME and REPO/NAME.flist
// are one flist.
func flistKey(url string) string {
	if strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://") {
		return url
	}
	return strings.TrimSuffix(url, ".flist")
}

func (p *pool) mountDir(key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(p.dir, hex.EncodeToString(h[:8]))
}

// acquire returns the mount of url, mounting it when no container uses it.
func (p *pool) acquire(ctx context.Context, url string) (*shared, error) {
	key := flistKey(url)
	p.mu.Lock()
	if s := p.m[key]; s != nil {
		s.refs++
		p.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			p.release(s)
			return nil, ctx.Err()
		}
		if s.err != nil {
			p.release(s)
			return nil, s.err
		}
		return s, nil
	}
	s := &shared{key: key, url: url, dir: p.mountDir(key), refs: 1, ready: make(chan struct{})}
	p.m[key] = s
	leaving := p.leaving[key]
	p.mu.Unlock()
	if leaving != nil {
		<-leaving // the previous mount at this dir is going
	}
	s.err = p.mount(ctx, s)
	close(s.ready)
	if s.err != nil {
		p.release(s)
		return nil, s.err
	}
	return s, nil
}

func (p *pool) mount(ctx context.Context, s *shared) error {
	if p.open == nil {
		return fmt.Errorf("flists are not available on this node")
	}
	r, fetcher, err := p.open(ctx, s.url)
	if err != nil {
		return fmt.Errorf("flist %s: %w", s.url, err)
	}
	if img := r.Meta().Image; img != nil {
		b, _ := json.Marshal(img)
		s.image = &container.Image{}
		if err := json.Unmarshal(b, s.image); err != nil {
			r.Close()
			return fmt.Errorf("flist %s: image config: %w", s.url, err)
		}
	}
	allow := true // images with a non-root user read the lower too
	mt, err := ffuse.Mount(ffuse.Config{Mountpoint: s.dir, Flist: r, Store: fetcher, Cache: p.cache,
		Name: "zos-flist:" + s.url, AllowOther: &allow})
	if err != nil {
		r.Close()
		return fmt.Errorf("flist %s: mount: %w", s.url, err)
	}
	s.mt, s.r = mt, r
	p.log.Info("flist mounted for containers", "flist", s.url, "dir", s.dir)
	return nil
}

// release drops a reference; the last one unmounts.
func (p *pool) release(s *shared) {
	p.mu.Lock()
	s.refs--
	if s.refs > 0 {
		p.mu.Unlock()
		return
	}
	if p.m[s.key] == s {
		delete(p.m, s.key)
	}
	if s.mt == nil {
		p.mu.Unlock()
		return
	}
	done := make(chan struct{})
	p.leaving[s.key] = done
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := s.mt.Unmount(ctx)
	cancel()
	s.r.Close()
	os.Remove(s.dir)
	p.mu.Lock()
	if p.leaving[s.key] == done {
		delete(p.leaving, s.key)
	}
	p.mu.Unlock()
	close(done)
	if err != nil {
		p.log.Warn("flist unmount", "flist", s.url, "err", err)
	} else {
		p.log.Info("flist unmounted: its last container is gone", "flist", s.url)
	}
}

// count is the number of flists mounted.
func (p *pool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// cleanStale removes what a previous process left under dir: dead FUSE
// mounts and empty mount points.
func (p *pool) cleanStale() {
	ents, _ := os.ReadDir(p.dir)
	for _, e := range ents {
		d := filepath.Join(p.dir, e.Name())
		if err := ffuse.CleanupStale(d); err != nil {
			p.log.Warn("stale flist mount", "dir", d, "err", err)
		}
		os.Remove(d)
	}
}
