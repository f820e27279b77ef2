package flistbench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	ffuse "github.com/zosproject/zos/flist/fuse"
	"github.com/zosproject/zos/flist/hub"
)

// testHub is a hub on 127.0.0.1 backed by memory, also serving static
// files under /static/ (the anchors' downloads).
type testHub struct {
	srv    *http.Server
	ln     net.Listener
	url    string
	client *hub.Client
	store  *fetchCounter
	done   chan struct{}
}

func startHub(staticDir string) (*testHub, error) {
	store := &fetchCounter{Store: mem.New()}
	h := hub.New(hub.Config{Store: store, Registry: hub.NewMemRegistry(), Authenticate: func(*http.Request) (hub.Identity, error) {
		return hub.Identity{User: "bench", Admin: true}, nil
	}})
	mux := http.NewServeMux()
	h.Register(mux)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.Dir(staticDir))))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	th := &testHub{srv: &http.Server{Handler: mux}, ln: ln, url: "http://" + ln.Addr().String(), store: store, done: make(chan struct{})}
	th.client = hub.NewClient(th.url, "bench")
	go func() {
		defer close(th.done)
		_ = th.srv.Serve(ln)
	}()
	return th, nil
}

func (th *testHub) close() {
	_ = th.srv.Close()
	<-th.done
}

// ColdStartConfig configures ColdStart.
type ColdStartConfig struct {
	Root    string // root file system directory
	Binary  string // path inside it to read, e.g. "/bin/busybox"
	WorkDir string // scratch space
}

// ColdStartResult compares a lazy mount with a full download.
type ColdStartResult struct {
	TarGzBytes  int64
	Files       uint64
	Mount       time.Duration // open flist over HTTP + mount + first full read of Binary
	Anchor      time.Duration // download the tar.gz over HTTP and extract it
	Ratio       float64       // Mount / Anchor (aim: <= 0.1)
	FetchedByte int64         // chunk bytes the mount pulled from the hub
}

// ColdStart uploads Root as a tar.gz to a local hub, then times (a) mounting
// the flist over HTTP with an empty cache until Binary has been read, and
// (b) downloading the same tar.gz from the same server and extracting it.
func ColdStart(ctx context.Context, cfg ColdStartConfig) (ColdStartResult, error) {
	var res ColdStartResult
	static := filepath.Join(cfg.WorkDir, "static")
	if err := os.MkdirAll(static, 0o755); err != nil {
		return res, err
	}
	tgz := filepath.Join(static, "rootfs.tar.gz")
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "-czf", tgz, "-C", cfg.Root, ".").CombinedOutput(); err != nil {
		return res, fmt.Errorf("tar: %v: %s", err, out)
	}
	st, err := os.Stat(tgz)
	if err != nil {
		return res, err
	}
	res.TarGzBytes = st.Size()
	th, err := startHub(static)
	if err != nil {
		return res, err
	}
	defer th.close()
	f, err := os.Open(tgz)
	if err != nil {
		return res, err
	}
	up, err := th.client.UploadArchive(ctx, "", "rootfs", "rootfs.tar.gz", f)
	f.Close()
	if err != nil {
		return res, err
	}
	res.Files = up.Stats.Files

	// (b) anchor: download + extract.
	dest := filepath.Join(cfg.WorkDir, "extract")
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return res, err
	}
	start := time.Now()
	resp, err := http.Get(th.url + "/static/rootfs.tar.gz")
	if err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "-xzf", "-", "-C", dest)
	cmd.Stdin = resp.Body
	out, err := cmd.CombinedOutput()
	resp.Body.Close()
	if err != nil {
		return res, fmt.Errorf("extract: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dest, cfg.Binary)); err != nil {
		return res, err
	}
	res.Anchor = time.Since(start)
	_ = os.RemoveAll(dest)

	// (a) lazy mount over HTTP, empty cache.
	fetchedBefore := fetchBytes(th)
	start = time.Now()
	client := hub.NewClient(th.url, "")
	fr, err := client.Open(ctx, "bench/rootfs")
	if err != nil {
		return res, err
	}
	defer fr.Close()
	c, err := cache.Open(cache.Config{Dir: filepath.Join(cfg.WorkDir, "cache"), MaxBytes: 1 << 30})
	if err != nil {
		return res, err
	}
	defer c.Close()
	m, err := ffuse.Mount(ffuse.Config{Mountpoint: filepath.Join(cfg.WorkDir, "mnt"), Flist: fr, Store: client, Cache: c})
	if err != nil {
		return res, err
	}
	defer m.Unmount(context.Background())
	if _, err := os.ReadFile(filepath.Join(m.Dir(), cfg.Binary)); err != nil {
		return res, err
	}
	res.Mount = time.Since(start)
	res.FetchedByte = fetchBytes(th) - fetchedBefore
	res.Ratio = res.Mount.Seconds() / res.Anchor.Seconds()
	return res, nil
}

func fetchBytes(th *testHub) int64 { return th.store.bytes.Load() }

// WarmReadResult compares warm sequential reads.
type WarmReadResult struct {
	Bytes       int64
	NativeMBps  float64
	MountMBps   float64
	Ratio       float64 // mount / native (aim: >= 0.8)
	Passthrough bool
}

// WarmRead writes a file of size bytes, builds an flist of it and mounts
// it with a cache, warms both (the mount's file ends up in the cache and is
// served by FUSE passthrough when the kernel has it), then times the best of
// three sequential reads of each.
func WarmRead(ctx context.Context, workDir string, size int64) (WarmReadResult, error) {
	res := WarmReadResult{Bytes: size}
	src := filepath.Join(workDir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return res, err
	}
	p := filepath.Join(src, "data")
	f, err := os.Create(p)
	if err != nil {
		return res, err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return res, err
	}
	f.Close()
	store := mem.New()
	tr, _, err := flist.Build(ctx, src, &flist.Options{Store: store})
	if err != nil {
		return res, err
	}
	fp := filepath.Join(workDir, "data.flist")
	if _, err := tr.WriteFile(fp); err != nil {
		return res, err
	}
	fr, err := flist.OpenFile(fp)
	if err != nil {
		return res, err
	}
	defer fr.Close()
	c, err := cache.Open(cache.Config{Dir: filepath.Join(workDir, "cache"), MaxBytes: 4*size + (64 << 20)})
	if err != nil {
		return res, err
	}
	defer c.Close()
	m, err := ffuse.Mount(ffuse.Config{Mountpoint: filepath.Join(workDir, "mnt"), Flist: fr, Store: store, Cache: c})
	if err != nil {
		return res, err
	}
	defer m.Unmount(context.Background())
	res.Passthrough = m.Passthrough()
	mp := filepath.Join(m.Dir(), "data")
	// Warm: read through the daemon (fills the cache), let the file be
	// assembled for passthrough, read again.
	for i := 0; i < 3; i++ {
		if _, err := readAll(mp); err != nil {
			return res, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := readAll(p); err != nil {
		return res, err
	}
	best := func(path string) (float64, error) {
		var top float64
		for i := 0; i < 3; i++ {
			d, err := readAll(path)
			if err != nil {
				return 0, err
			}
			if mbps := float64(size) / d.Seconds() / 1e6; mbps > top {
				top = mbps
			}
		}
		return top, nil
	}
	if res.NativeMBps, err = best(p); err != nil {
		return res, err
	}
	if res.MountMBps, err = best(mp); err != nil {
		return res, err
	}
	res.Ratio = res.MountMBps / res.NativeMBps
	return res, nil
}

func readAll(p string) (time.Duration, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for {
		_, err := f.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// StatWalkResult compares `find -type f | xargs stat` on a fresh mount with
// the source directory.
type StatWalkResult struct {
	Files         int
	SourcePerSec  float64
	MountPerSec   float64 // first walk of a fresh mount (kernel caches empty)
	MountWarmPerS float64 // second walk
	Ratio         float64 // MountPerSec / SourcePerSec
}

// StatWalk builds root into an flist, mounts it and times the walk.
func StatWalk(ctx context.Context, root, workDir string) (StatWalkResult, error) {
	var res StatWalkResult
	store := mem.New()
	tr, _, err := flist.Build(ctx, root, &flist.Options{Store: store, AllowDevices: true})
	if err != nil {
		return res, err
	}
	fp := filepath.Join(workDir, "walk.flist")
	meta, err := tr.WriteFile(fp)
	if err != nil {
		return res, err
	}
	res.Files = int(meta.Stats.Files)
	fr, err := flist.OpenFile(fp)
	if err != nil {
		return res, err
	}
	defer fr.Close()
	walk := func(dir string) (float64, error) {
		start := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", `find "$1" -type f -print0 | xargs -0 stat > /dev/null`, "sh", dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("find | stat: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return float64(res.Files) / time.Since(start).Seconds(), nil
	}
	if _, err := walk(root); err != nil { // warm the source
		return res, err
	}
	if res.SourcePerSec, err = walk(root); err != nil {
		return res, err
	}
	m, err := ffuse.Mount(ffuse.Config{Mountpoint: filepath.Join(workDir, "mnt"), Flist: fr, Store: store})
	if err != nil {
		return res, err
	}
	defer m.Unmount(context.Background())
	if res.MountPerSec, err = walk(m.Dir()); err != nil {
		return res, err
	}
	if res.MountWarmPerS, err = walk(m.Dir()); err != nil {
		return res, err
	}
	res.Ratio = res.MountPerSec / res.SourcePerSec
	return res, nil
}
