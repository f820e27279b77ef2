package fuse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	"golang.org/x/sys/unix"
)

// Errors.
var (
	// ErrBusy: the mountpoint already has a live mount.
	ErrBusy = errors.New("fuse: mountpoint is already mounted")
)

// Config configures a mount.
type Config struct {
	// Mountpoint is the directory the tree appears at (created if
	// missing).
	Mountpoint string
	// Flist is the opened flist to serve. The mount does not close it.
	Flist *flist.Reader
	// Store fetches chunks.
	Store chunkstore.Fetcher
	// Cache is the node's shared chunk cache; nil keeps chunks in memory
	// only (and disables passthrough).
	Cache *cache.Cache
	// FetchTimeout bounds how long a read waits for the store before it
	// fails with EIO (default 30s).
	FetchTimeout time.Duration
	// Readahead is how many chunks sequential readers fetch ahead
	// (default 4; negative disables).
	Readahead int
	// MemoryBytes bounds chunks kept in memory (default 64 MiB).
	MemoryBytes int64
	// DisablePassthrough turns off FUSE passthrough of fully cached files.
	DisablePassthrough bool
	// RW adds a writable overlay (kernel overlayfs: the flist is the lower
	// layer, writes land in OverlayDir/upper and never reach the store).
	RW bool
	// OverlayDir holds upper/, work/ and the FUSE lower mount for RW.
	// Default: a new temporary directory, removed at unmount (writes are
	// then discarded). It must be on a local file system.
	OverlayDir string
	// Name appears as the file system source in the mount table.
	Name string
	// AllowOther lets users other than the mounter use the mount
	// (default true when running as root, which containers need).
	AllowOther *bool
	// Debug logs every FUSE request.
	Debug bool
	// Registry, if set, receives the mount's metrics.
	Registry prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	o := *c
	if o.FetchTimeout == 0 {
		o.FetchTimeout = 30 * time.Second
	}
	if o.Readahead == 0 {
		o.Readahead = 4
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = 64 << 20
	}
	if o.Name == "" {
		o.Name = "zos-flist"
	}
	if o.AllowOther == nil {
		root := os.Geteuid() == 0
		o.AllowOther = &root
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("component", "flist-fuse", "mountpoint", o.Mountpoint)
	return o
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Mountpoint == "":
		return errors.New("fuse: Mountpoint is required")
	case c.Flist == nil:
		return errors.New("fuse: Flist is required")
	case c.Store == nil:
		return errors.New("fuse: Store is required")
	case c.FetchTimeout < 0:
		return errors.New("fuse: negative FetchTimeout")
	}
	return nil
}

// Mounted is a mounted flist.
type Mounted struct {
	cfg     Config
	dir     string // user-visible mountpoint
	lower   string // FUSE mountpoint (== dir unless RW)
	overlay string // OverlayDir when RW
	tmpOver bool   // OverlayDir is ours to remove
	server  *gofuse.Server
	mfs     *mountFS
	cancel  context.CancelFunc
	m       *metrics

	once sync.Once
	done chan struct{}
}

// Mount mounts the flist and returns once the tree is visible. A stale
// mount at the mountpoint (a FUSE daemon that died: "transport endpoint is
// not connected") is lazily unmounted first; a live one is ErrBusy.
func Mount(cfg Config) (*Mounted, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := cfg.withDefaults()
	dir, err := filepath.Abs(o.Mountpoint)
	if err != nil {
		return nil, fmt.Errorf("fuse: %w", err)
	}
	if err := CleanupStale(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fuse: %w", err)
	}
	mt := &Mounted{cfg: o, dir: dir, lower: dir, done: make(chan struct{})}
	if o.RW {
		mt.overlay = o.OverlayDir
		if mt.overlay == "" {
			if mt.overlay, err = os.MkdirTemp("", "zos-overlay-*"); err != nil {
				return nil, fmt.Errorf("fuse: %w", err)
			}
			mt.tmpOver = true
		}
		mt.lower = filepath.Join(mt.overlay, "lower")
		if err := CleanupStale(mt.lower); err != nil {
			return nil, err
		}
		for _, d := range []string{"lower", "upper", "work"} {
			if err := os.MkdirAll(filepath.Join(mt.overlay, d), 0o755); err != nil {
				return nil, fmt.Errorf("fuse: %w", err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	mt.cancel = cancel
	mt.m = newMetrics(o.Registry, dir)
	src := newSource(ctx, o.Store, o.Cache, o.FetchTimeout, o.MemoryBytes, max(o.Readahead, 1)*2, mt.m)
	mt.mfs = &mountFS{r: o.Flist, src: src, cache: o.Cache, readahead: o.Readahead, log: o.Logger, m: mt.m, ctx: ctx, assembling: map[cache.Key]bool{}}
	rootIn, err := o.Flist.Inode(flist.RootIno)
	if err != nil {
		mt.cleanupFailed()
		return nil, err
	}
	root := &node{mfs: mt.mfs, in: rootIn}
	long := time.Hour
	opts := &fs.Options{
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &long,
		RootStableAttr:  &fs.StableAttr{Mode: rootIn.Type(), Ino: uint64(flist.RootIno)},
		MountOptions: gofuse.MountOptions{
			FsName:               o.Name,
			Name:                 "zos",
			AllowOther:           *o.AllowOther,
			Options:              []string{"ro", "default_permissions"},
			DirectMount:          true,
			DirectMountFlags:     syscall.MS_RDONLY,
			MaxReadAhead:         1 << 20,
			MaxBackground:        64,
			EnableSymlinkCaching: true,
			Debug:                o.Debug,
		},
	}
	// fs.Mount, with the node file system's opens and releases
	// serialised per inode (serialOpens).
	server, err := gofuse.NewServer(&serialOpens{RawFileSystem: fs.NewNodeFS(root, opts)}, mt.lower, &opts.MountOptions)
	if err != nil {
		mt.cleanupFailed()
		return nil, fmt.Errorf("fuse: mount %s: %w", mt.lower, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		mt.cleanupFailed()
		return nil, fmt.Errorf("fuse: mount %s: %w", mt.lower, err)
	}
	mt.server = server
	if !o.DisablePassthrough && o.Cache != nil && server.KernelSettings().Flags64()&gofuse.CAP_PASSTHROUGH != 0 {
		mt.mfs.passthrough.Store(true)
	}
	if o.RW {
		data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", mt.lower, filepath.Join(mt.overlay, "upper"), filepath.Join(mt.overlay, "work"))
		if err := unix.Mount("overlay", dir, "overlay", 0, data); err != nil {
			_ = server.Unmount()
			server.Wait()
			mt.cleanupFailed()
			return nil, fmt.Errorf("fuse: overlay mount on %s: %w", dir, err)
		}
	}
	go func() {
		server.Wait()
		mt.shutdown()
	}()
	o.Logger.Info("flist mounted", "rw", o.RW, "passthrough", mt.mfs.passthrough.Load(), "inodes", o.Flist.Meta().Stats.Inodes)
	return mt, nil
}

func (mt *Mounted) cleanupFailed() {
	mt.cancel()
	mt.m.unregister()
	if mt.tmpOver {
		os.RemoveAll(mt.overlay)
	}
}

// shutdown runs once the FUSE server has stopped.
func (mt *Mounted) shutdown() {
	mt.once.Do(func() {
		mt.cancel()
		mt.mfs.src.wait()
		mt.mfs.wg.Wait()
		mt.m.unregister()
		if mt.tmpOver {
			if err := os.RemoveAll(mt.overlay); err != nil {
				mt.cfg.Logger.Warn("remove overlay dir", "err", err)
			}
		}
		close(mt.done)
	})
}

// Dir returns the mountpoint.
func (mt *Mounted) Dir() string { return mt.dir }

// UpperDir returns the overlay's upper directory ("" when read-only).
func (mt *Mounted) UpperDir() string {
	if mt.overlay == "" {
		return ""
	}
	return filepath.Join(mt.overlay, "upper")
}

// Passthrough reports whether fully cached files are served by the kernel.
func (mt *Mounted) Passthrough() bool { return mt.mfs.passthrough.Load() }

// Done is closed when the mount has gone (Unmount, or unmounted from
// outside with umount/fusermount).
func (mt *Mounted) Done() <-chan struct{} { return mt.done }

// Wait blocks until the mount has gone.
func (mt *Mounted) Wait() { <-mt.done }

// Unmount unmounts (overlay first, then the FUSE tree), retrying while
// the mount is busy until ctx ends, then detaching lazily.
func (mt *Mounted) Unmount(ctx context.Context) error {
	var errs []error
	if mt.cfg.RW {
		if err := unmountRetry(ctx, mt.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := mt.server.Unmount(); err != nil {
		// Busy: detach lazily so the daemon can exit.
		if derr := unix.Unmount(mt.lower, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("fuse: unmount %s: %v (lazy: %v)", mt.lower, err, derr))
		}
	}
	select {
	case <-mt.done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

func unmountRetry(ctx context.Context, dir string) error {
	for {
		err := unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("fuse: unmount %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			if derr := unix.Unmount(dir, unix.MNT_DETACH); derr != nil {
				return fmt.Errorf("fuse: unmount %s: busy, lazy unmount: %w", dir, derr)
			}
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// isMountpoint reports whether dir is a mount point, from mountinfo.
func isMountpoint(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountPath(fields[4]) == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CleanupStale detaches dead mounts at dir: a FUSE mount whose daemon died
// answers ENOTCONN ("transport endpoint is not connected"), and an overlay
// over such a mount fails to list. Live mounts are ErrBusy; a plain
// directory is left alone.
func CleanupStale(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for i := 0; i < 8; i++ {
		mounted, err := isMountpoint(dir)
		if err != nil {
			return fmt.Errorf("fuse: %w", err)
		}
		if !mounted {
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); errors.Is(err, unix.ENOTCONN) {
				// Mounted in another mount namespace view; detach anyway.
				_ = unix.Unmount(dir, unix.MNT_DETACH)
			}
			return nil
		}
		if !stale(dir) {
			return fmt.Errorf("%w: %s (unmount it first)", ErrBusy, dir)
		}
		slog.Default().Warn("detaching stale mount", "component", "flist-fuse", "mountpoint", dir)
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("fuse: detach stale mount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("fuse: %s: too many stacked stale mounts", dir)
}

func stale(dir string) bool {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.EIO)
	}
	f, err := os.Open(dir)
	if err != nil {
		return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.EIO)
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return err != nil && (errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.EIO))
}
