package cache

import (
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zeebo/blake3"
	"github.com/zosproject/zos/chunkstore"
	"golang.org/x/sys/unix"
)

// Errors.
var (
	// ErrMiss: the object is not in the cache.
	ErrMiss = errors.New("cache: miss")
	// ErrTooLarge: an object larger than the cache may hold.
	ErrTooLarge = errors.New("cache: object larger than the cache bound")
)

// Config configures a Cache.
type Config struct {
	// Dir is the cache directory, shared by every process that uses it.
	Dir string
	// MaxBytes bounds the bytes of cached objects (default 4 GiB).
	MaxBytes int64
	// LowWater is the fraction of MaxBytes eviction frees down to
	// (default 0.9), so evictions are batched.
	LowWater float64
	// TouchInterval throttles recency updates of one object (default 2s).
	TouchInterval time.Duration
	// OpenFiles bounds the file descriptors kept open for reads
	// (default 32).
	OpenFiles int
	// Registry, if set, receives the cache's metrics.
	Registry prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultMaxBytes is the default bound.
const DefaultMaxBytes = 4 << 30

func (c *Config) withDefaults() Config {
	o := *c
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.LowWater == 0 {
		o.LowWater = 0.9
	}
	if o.TouchInterval == 0 {
		o.TouchInterval = 2 * time.Second
	}
	if o.OpenFiles == 0 {
		o.OpenFiles = 32
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("component", "flist-cache")
	return o
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	o := c.withDefaults()
	switch {
	case o.Dir == "":
		return errors.New("cache: Dir is required")
	case o.MaxBytes < 1<<20:
		return fmt.Errorf("cache: MaxBytes %d is below 1 MiB", o.MaxBytes)
	case o.LowWater <= 0 || o.LowWater > 1:
		return fmt.Errorf("cache: LowWater %v out of (0, 1]", o.LowWater)
	}
	return nil
}

// Key names a cached object: a chunk (its Ref) or an assembled file (the
// FileKey of its chunk list).
type Key struct {
	kind byte // 'c' chunk, 'f' assembled file
	sum  chunkstore.Ref
}

// ChunkKey is the key of a chunk.
func ChunkKey(ref chunkstore.Ref) Key { return Key{kind: 'c', sum: ref} }

// FileKey is the key of the concatenation of chunks (a whole file).
func FileKey(refs []chunkstore.Ref) Key {
	h := blake3.New()
	h.Write([]byte("zos-file\x00"))
	for _, r := range refs {
		h.Write(r[:])
	}
	var k Key
	k.kind = 'f'
	copy(k.sum[:], h.Sum(nil))
	return k
}

func (k Key) String() string { return string(k.kind) + "-" + k.sum.String() }

// Cache is a bounded, persistent, content-addressed object cache in a
// directory shared by every process on the node. It is safe for concurrent
// use within a process and across processes.
type Cache struct {
	cfg     Config
	dir     string
	lock    *os.File   // flock'ed for accounting and eviction across processes
	lockMu  sync.Mutex // flock does not exclude goroutines sharing the descriptor
	metrics *metrics

	mu       sync.Mutex
	verified map[Key]bool      // objects this process wrote or checked
	touched  map[Key]time.Time // last recency update by this process
	fds      map[Key]*list.Element
	fdLRU    *list.List // of *openFile
}

type openFile struct {
	key  Key
	f    *os.File
	refs int
	size int64
}

// Open opens (creating if needed) the cache directory and reconciles its
// accounting with what is on disk.
func Open(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := cfg.withDefaults()
	for _, d := range []string{"c", "f", "tmp"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(o.Dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{
		cfg: o, dir: o.Dir, lock: lock,
		verified: map[Key]bool{}, touched: map[Key]time.Time{},
		fds: map[Key]*list.Element{}, fdLRU: list.New(),
	}
	c.metrics = newMetrics(o.Registry, c)
	// Reconcile: recount from disk, drop stale temporaries, and evict if
	// another process left the cache over a (possibly smaller) bound.
	err = c.withLock(func(usage int64) (int64, error) {
		return c.evictLocked(0, true)
	})
	if err != nil {
		lock.Close()
		return nil, err
	}
	return c, nil
}

// Close releases file descriptors. The cache directory stays.
func (c *Cache) Close() error {
	c.mu.Lock()
	for e := c.fdLRU.Front(); e != nil; e = e.Next() {
		e.Value.(*openFile).f.Close()
	}
	c.fds = map[Key]*list.Element{}
	c.fdLRU.Init()
	c.mu.Unlock()
	c.metrics.unregister()
	return c.lock.Close()
}

// MaxBytes returns the bound.
func (c *Cache) MaxBytes() int64 { return c.cfg.MaxBytes }

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(k Key) string {
	h := k.sum.String()
	return filepath.Join(c.dir, string(k.kind), h[:2], h)
}

// withLock runs fn under the cross-process lock with the recorded usage
// and records the usage fn returns.
func (c *Cache) withLock(fn func(usage int64) (int64, error)) error {
	c.lockMu.Lock()
	defer c.lockMu.Unlock()
	if err := flock(c.lock); err != nil {
		return err
	}
	defer unix.Flock(int(c.lock.Fd()), unix.LOCK_UN)
	var buf [8]byte
	var usage int64
	if n, _ := c.lock.ReadAt(buf[:], 0); n == 8 {
		usage = int64(leUint64(buf[:]))
	}
	nu, err := fn(usage)
	if err != nil {
		return err
	}
	if nu < 0 {
		nu = 0
	}
	putLeUint64(buf[:], uint64(nu))
	_, err = c.lock.WriteAt(buf[:], 0)
	c.metrics.usage.Set(float64(nu))
	return err
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("cache: lock: %w", err)
		}
		return nil
	}
}

// Usage returns the bytes the cache accounts for.
func (c *Cache) Usage() (int64, error) {
	var u int64
	err := c.withLock(func(usage int64) (int64, error) { u = usage; return usage, nil })
	return u, err
}

type object struct {
	path  string
	size  int64
	mtime int64
}

// evictLocked rescans the directory, then deletes least recently used
// objects until usage+reserve fits under the low-water mark (or, when
// force is false, only if it does not fit under MaxBytes). It returns the
// new usage (without reserve).
func (c *Cache) evictLocked(reserve int64, force bool) (int64, error) {
	var objs []object
	var total int64
	now := time.Now()
	// Temporaries count for the reservation written in their name. Objects
	// move from tmp/ to their home under the lock, so this walk sees each
	// once.
	if ents, err := os.ReadDir(filepath.Join(c.dir, "tmp")); err == nil {
		for _, e := range ents {
			info, err := e.Info()
			if err != nil {
				continue
			}
			if now.Sub(info.ModTime()) > time.Hour {
				os.Remove(filepath.Join(c.dir, "tmp", e.Name()))
				continue
			}
			total += reservedSize(e.Name())
		}
	}
	for _, kind := range []string{"c", "f"} {
		root := filepath.Join(c.dir, kind)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				return nil
			}
			objs = append(objs, object{path: p, size: st.Size, mtime: st.Mtim.Nano()})
			total += st.Size
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("cache: scan: %w", err)
		}
	}
	limit := c.cfg.MaxBytes
	if force || total+reserve > c.cfg.MaxBytes {
		limit = int64(float64(c.cfg.MaxBytes) * c.cfg.LowWater)
	}
	if total+reserve <= limit {
		return total, nil
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].mtime < objs[j].mtime })
	evicted := 0
	for _, o := range objs {
		if total+reserve <= limit {
			break
		}
		if err := os.Remove(o.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		total -= o.size
		evicted++
		c.metrics.evictions.Inc()
		c.metrics.evictedBytes.Add(float64(o.size))
	}
	if evicted > 0 {
		c.cfg.Logger.Debug("evicted", "objects", evicted, "usage", total, "max", c.cfg.MaxBytes)
	}
	return total, nil
}

// reserve accounts size bytes for a new object and creates its temporary
// file, both under the lock, evicting as needed so the bound always holds,
// temporaries included.
func (c *Cache) reserve(k Key, size int64) (*os.File, error) {
	var tmp *os.File
	err := c.withLock(func(usage int64) (int64, error) {
		if usage+size > c.cfg.MaxBytes {
			u, err := c.evictLocked(size, false)
			if err != nil {
				return usage, err
			}
			if u+size > c.cfg.MaxBytes {
				return u, ErrTooLarge
			}
			usage = u
		}
		f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), fmt.Sprintf("%s.%d.*", k, size))
		if err != nil {
			return usage, fmt.Errorf("cache: %w", err)
		}
		tmp = f
		return usage + size, nil
	})
	return tmp, err
}

// reservedSize parses the size from a temporary's name.
func reservedSize(name string) int64 {
	parts := strings.Split(name, ".")
	if len(parts) < 3 {
		return 0
	}
	n, _ := strconv.ParseInt(parts[len(parts)-2], 10, 64)
	return n
}

// abandon removes a temporary and returns its reservation.
func (c *Cache) abandon(tmp string, size int64) {
	_ = c.withLock(func(usage int64) (int64, error) {
		os.Remove(tmp)
		return usage - size, nil
	})
}

// Has reports whether the object is cached.
func (c *Cache) Has(k Key) bool {
	_, err := os.Stat(c.path(k))
	return err == nil
}

// Put stores data under k. The caller has verified data (for a chunk, that
// it matches its Ref). Storing an existing object only refreshes it.
func (c *Cache) Put(k Key, data []byte) error {
	return c.put(k, int64(len(data)), func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// PutFrom stores size bytes produced by write under k (for assembled
// files). The content must be what k names.
func (c *Cache) PutFrom(k Key, size int64, write func(w io.Writer) error) error {
	return c.put(k, size, func(f *os.File) error { return write(f) })
}

func (c *Cache) put(k Key, size int64, write func(*os.File) error) error {
	p := c.path(k)
	if _, err := os.Stat(p); err == nil {
		c.touch(k, p, true)
		return nil
	}
	if size > c.cfg.MaxBytes/2 {
		return ErrTooLarge
	}
	tmp, err := c.reserve(k, size)
	if err != nil {
		return err
	}
	err = write(tmp)
	if err == nil {
		var st os.FileInfo
		if st, err = tmp.Stat(); err == nil && st.Size() != size {
			err = fmt.Errorf("cache: wrote %d bytes, expected %d", st.Size(), size)
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(p), 0o755)
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o444)
	}
	if err == nil {
		// Rename under the lock too, so a scan never sees an object in
		// both tmp/ and its home.
		err = c.withLock(func(usage int64) (int64, error) { return usage, os.Rename(tmp.Name(), p) })
	}
	if err != nil {
		c.abandon(tmp.Name(), size)
		return fmt.Errorf("cache: store %s: %w", k, err)
	}
	c.mu.Lock()
	c.verified[k] = true
	c.touched[k] = time.Now()
	c.mu.Unlock()
	c.metrics.stored.Add(float64(size))
	return nil
}

// touch refreshes the recency of an object, at most once per
// TouchInterval per process.
func (c *Cache) touch(k Key, p string, force bool) {
	now := time.Now()
	c.mu.Lock()
	last := c.touched[k]
	if !force && now.Sub(last) < c.cfg.TouchInterval {
		c.mu.Unlock()
		return
	}
	c.touched[k] = now
	if len(c.touched) > 1<<16 {
		c.touched = map[Key]time.Time{k: now}
	}
	c.mu.Unlock()
	_ = unix.UtimesNano(p, []unix.Timespec{{Sec: 0, Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(now.UnixNano())})
}

// acquire returns an open file for k (shared, reference counted).
// Objects written by another process are verified once per process.
func (c *Cache) acquire(k Key, verify func(f *os.File, size int64) error) (*openFile, error) {
	c.mu.Lock()
	if e, ok := c.fds[k]; ok {
		of := e.Value.(*openFile)
		of.refs++
		c.fdLRU.MoveToFront(e)
		c.mu.Unlock()
		return of, nil
	}
	trusted := c.verified[k]
	c.mu.Unlock()
	p := c.path(k)
	f, err := os.Open(p)
	if err != nil {
		return nil, ErrMiss
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, ErrMiss
	}
	if !trusted {
		if verify == nil {
			verify = func(f *os.File, size int64) error {
				if k.kind != 'c' {
					return nil
				}
				h := blake3.New()
				if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
					return err
				}
				if !bytes.Equal(h.Sum(nil), k.sum[:]) {
					return chunkstore.ErrCorrupt
				}
				return nil
			}
		}
		if err := verify(f, st.Size()); err != nil {
			f.Close()
			c.cfg.Logger.Warn("dropping corrupt cache object", "key", k.String(), "err", err)
			os.Remove(p)
			c.metrics.corrupt.Inc()
			return nil, ErrMiss
		}
		c.mu.Lock()
		c.verified[k] = true
		c.mu.Unlock()
	}
	c.touch(k, p, false)
	of := &openFile{key: k, f: f, refs: 1, size: st.Size()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.fds[k]; ok { // raced with another opener
		f.Close()
		of = e.Value.(*openFile)
		of.refs++
		return of, nil
	}
	c.fds[k] = c.fdLRU.PushFront(of)
	for c.fdLRU.Len() > c.cfg.OpenFiles {
		back := c.fdLRU.Back()
		old := back.Value.(*openFile)
		if old.refs > 0 {
			break
		}
		c.fdLRU.Remove(back)
		delete(c.fds, old.key)
		old.f.Close()
	}
	return of, nil
}

func (c *Cache) releaseFile(of *openFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	of.refs--
	if of.refs == 0 && c.fdLRU.Len() > c.cfg.OpenFiles {
		if e, ok := c.fds[of.key]; ok && e.Value == of {
			c.fdLRU.Remove(e)
			delete(c.fds, of.key)
			of.f.Close()
		}
	}
}

// ReadAt reads from cached object k at off. A missing object is ErrMiss.
func (c *Cache) ReadAt(k Key, p []byte, off int64) (int, error) {
	of, err := c.acquire(k, nil)
	if err != nil {
		c.metrics.misses.Inc()
		return 0, err
	}
	defer c.releaseFile(of)
	n, err := of.f.ReadAt(p, off)
	if err == io.EOF && off+int64(n) >= of.size {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("cache: read %s: %w", k, err)
	}
	c.metrics.hits.Inc()
	c.metrics.readBytes.Add(float64(n))
	return n, nil
}

// Get returns the whole cached object k.
func (c *Cache) Get(k Key) ([]byte, error) {
	of, err := c.acquire(k, nil)
	if err != nil {
		c.metrics.misses.Inc()
		return nil, err
	}
	defer c.releaseFile(of)
	buf := make([]byte, of.size)
	if _, err := of.f.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("cache: read %s: %w", k, err)
	}
	c.metrics.hits.Inc()
	c.metrics.readBytes.Add(float64(len(buf)))
	return buf, nil
}

// OpenFile opens cached object k for reading by the caller (for FUSE
// passthrough). verify, if set, checks objects this process did not write
// itself before they are trusted. The caller closes the file; eviction
// while it is open is safe (the inode lives until closed).
func (c *Cache) OpenFile(k Key, verify func(f *os.File, size int64) error) (*os.File, error) {
	of, err := c.acquire(k, verify)
	if err != nil {
		return nil, err
	}
	defer c.releaseFile(of)
	f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", of.f.Fd()))
	if err != nil {
		return nil, ErrMiss
	}
	return f, nil
}

// Remove deletes an object (for corrupt data found by a caller).
func (c *Cache) Remove(k Key) {
	p := c.path(k)
	st, err := os.Stat(p)
	if err != nil {
		return
	}
	_ = c.withLock(func(usage int64) (int64, error) {
		if os.Remove(p) == nil {
			usage -= st.Size()
		}
		return usage, nil
	})
	c.mu.Lock()
	delete(c.verified, k)
	if e, ok := c.fds[k]; ok && e.Value.(*openFile).refs == 0 {
		c.fdLRU.Remove(e)
		delete(c.fds, k)
		e.Value.(*openFile).f.Close()
	}
	c.mu.Unlock()
}

// DiskUsage returns the bytes of stored objects and temporaries in a cache
// directory (what the bound covers), for tests and monitoring. It holds the
// cache lock (shared) while it walks, so evictions, reservations and the
// renames that publish objects do not run mid-walk: the result is exact.
func DiskUsage(dir string) (int64, error) {
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer lock.Close()
	for {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_SH)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, err
	}
	var total int64
	for _, sub := range []string{"tmp", "c", "f"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return total, nil
}

func leUint64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func putLeUint64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}
