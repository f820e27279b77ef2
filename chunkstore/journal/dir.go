package journal

import (
	"container/list"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
)

// DirConfig configures a Dir.
type DirConfig struct {
	// Dir holds the journal files; it is created if missing. Required.
	Dir string
	// FS is the file system seam (pebble's vfs.FS; tests wrap it with
	// chunkstore/internal/faultfs). Default vfs.Default, where appends use
	// one pwritev and the directory lock is a flock.
	FS vfs.FS
	// NoSync skips every fdatasync and directory sync: nothing is durable.
	// Tests and benchmarks only.
	NoSync bool
	// MaxOpen bounds the journal files kept open between operations; the
	// least recently used are closed beyond it. Default 256.
	MaxOpen int
	// Logger (component "journal"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the metrics (zos_journal_*).
	Registry *prometheus.Registry
}

// ErrConfig reports an invalid DirConfig or ReplicatedConfig.
var ErrConfig = errors.New("journal: bad config")

func (c *DirConfig) setDefaults() {
	if c.MaxOpen == 0 {
		c.MaxOpen = 256
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether c (after defaults) is usable.
func (c DirConfig) Validate() error {
	c.setDefaults()
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is required", ErrConfig)
	case c.MaxOpen < 1:
		return fmt.Errorf("%w: MaxOpen must be positive", ErrConfig)
	}
	return nil
}

// On-disk layout (see doc.go).
const (
	fileMagic    = "ZOSJNL01"
	sealMagic    = "ZOSSEAL1"
	journalExt   = ".jnl"
	sealExt      = ".seal"
	tmpExt       = ".tmp"
	lockName     = "LOCK"
	framePrefix  = 8  // size u32 | crc u32
	frameHead    = 12 // epoch u64 | count u32
	recHead      = 12 // seq u64 | len u32
	minFrameBody = frameHead + recHead
	maxFrameBody = frameHead + MaxRecords*recHead + MaxBytes
	// maxFile: a header, MaxBytes of frames and one torn frame; a larger
	// file is not a journal this package wrote.
	maxFile = 8 + 2 + MaxName + 4 + MaxBytes + framePrefix + maxFrameBody
	// rewriteMin: Trim rewrites a journal without its covered prefix once
	// the prefix is this big (or more than half the file).
	rewriteMin = 1 << 20
	// maxIov caps the parts of one pwritev (IOV_MAX).
	maxIov = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Dir is one node's journals, one file per name in a directory. It
// implements Log; it is safe for concurrent use (operations on one name are
// serialised, different names proceed in parallel). Contexts are checked
// when an operation starts; file I/O is not interrupted.
type Dir struct {
	cfg  DirConfig
	log  *slog.Logger
	m    *dirMetrics
	fs   vfs.FS
	osFS bool      // fs is vfs.Default: pwritev, fdatasync and flock directly
	lock io.Closer // one process (and one Dir) per directory

	mu     sync.Mutex
	names  map[string]*journal
	lru    list.List // journals with an open file, most recently used first
	closed bool
}

var _ Log = (*Dir)(nil)

// journal is the state of one name. Its fields are guarded by mu, except
// elem (Dir.mu).
type journal struct {
	name     string
	path     string // the journal file
	sealPath string // the seal file

	mu     sync.Mutex
	gone   bool // no longer in Dir.names (Trim All, Close): look it up again
	loaded bool // the fields below reflect the files
	exists bool // the journal file exists
	f      vfs.File
	elem   *list.Element
	// failed is set when an append's write or fdatasync failed: the
	// kernel may have dropped the dirty pages while the file still reads
	// well from the page cache, so nothing later appended to this file
	// can be acknowledged as durable (fsyncgate). Appends are refused
	// until the Dir is reopened (which reads the file again and checks
	// every frame) or Trim(name, All, All) removes the journal.
	failed   error
	hdrLen   int64
	end      int64 // end of the last good frame: the next append goes here
	size     int64 // the file's size; above end while a torn tail awaits cutting
	seal     uint64
	maxEpoch uint64 // of the records in the file: they seal the name too
	cost     int64  // of the records in the file, toward MaxBytes
	frames   []frameInfo
}

// frameInfo describes one frame (one Append) of a journal file.
type frameInfo struct {
	end     int64 // offset just past the frame
	epoch   uint64
	lastSeq uint64
	cost    int64
}

// sealAt is the name's effective seal: appends below it are fenced.
func (j *journal) sealAt() uint64 { return max(j.seal, j.maxEpoch) }

// OpenDir opens (creating it if needed) a directory of journals. Files
// left by an interrupted rewrite or seal are removed; journals are read
// when first used.
func OpenDir(cfg DirConfig) (*Dir, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	fsys := cfg.FS
	if err := fsys.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	d := &Dir{
		cfg:   cfg,
		fs:    fsys,
		osFS:  fsys == vfs.Default,
		log:   cfg.Logger.With("component", "journal", "dir", cfg.Dir),
		names: map[string]*journal{},
	}
	lock, err := d.lockDir()
	if err != nil {
		return nil, err
	}
	d.lock = lock
	ents, err := fsys.List(cfg.Dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("journal: %w", err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e, tmpExt) {
			d.log.Info("removing the leftover of an interrupted write", "file", e)
			if err := fsys.Remove(fsys.PathJoin(cfg.Dir, e)); err != nil {
				lock.Close()
				return nil, fmt.Errorf("journal: %w", err)
			}
		}
	}
	d.m = newDirMetrics(cfg.Registry)
	return d, nil
}

// Close closes the journal files; later calls fail with ErrClosed.
// Operations in flight finish first.
func (d *Dir) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	js := make([]*journal, 0, len(d.names))
	for _, j := range d.names {
		js = append(js, j)
	}
	d.mu.Unlock()
	for _, j := range js {
		j.mu.Lock()
		if j.f != nil {
			j.f.Close()
			j.f = nil
		}
		j.gone = true
		j.mu.Unlock()
	}
	d.m.unregister()
	return d.lock.Close()
}

// fileBase is the file name (without extension) of name's journal: 128
// bits of its Ref in hex. The name itself is in the file's header.
func fileBase(name string) string {
	r := RefOf(name)
	return hex.EncodeToString(r[:16])
}

// acquire returns name's journal, locked.
func (d *Dir) acquire(ctx context.Context, name string) (*journal, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, ErrClosed
		}
		j := d.names[name]
		if j == nil {
			base := d.fs.PathJoin(d.cfg.Dir, fileBase(name))
			j = &journal{name: name, path: base + journalExt, sealPath: base + sealExt}
			d.names[name] = j
		}
		d.mu.Unlock()
		j.mu.Lock()
		if !j.gone {
			return j, nil
		}
		j.mu.Unlock()
	}
}

// touch marks j (locked, with an open file) most recently used and closes
// the files of the least recently used journals beyond MaxOpen (skipping
// those in use: their lock is only tried, so touch never waits).
func (d *Dir) touch(j *journal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if j.elem != nil {
		d.lru.MoveToFront(j.elem)
	} else {
		j.elem = d.lru.PushFront(j)
	}
	for e := d.lru.Back(); e != nil && d.lru.Len() > d.cfg.MaxOpen; {
		prev := e.Prev()
		if o := e.Value.(*journal); o != j && o.mu.TryLock() {
			if o.f != nil {
				o.f.Close()
				o.f = nil
			}
			d.lru.Remove(e)
			o.elem = nil
			o.mu.Unlock()
		}
		e = prev
	}
}

// file returns j's open file (j locked, its file existing).
func (d *Dir) file(j *journal) (vfs.File, error) {
	if j.f == nil {
		f, err := d.fs.OpenReadWrite(j.path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return nil, fmt.Errorf("journal %q: %w", j.name, err)
		}
		j.f = f
	}
	d.touch(j)
	return j.f, nil
}

// dropFile closes j's file (j locked).
func (d *Dir) dropFile(j *journal) {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	d.mu.Lock()
	if j.elem != nil {
		d.lru.Remove(j.elem)
		j.elem = nil
	}
	d.mu.Unlock()
}

// load reads j's files (j locked) unless it did already: the seal, the
// header, and every frame, checking their checksums. A torn tail is noted
// (size > end) and cut by the next append.
func (d *Dir) load(j *journal) error {
	if j.loaded {
		return nil
	}
	d.dropFile(j)
	j.exists, j.frames, j.hdrLen, j.end, j.size, j.maxEpoch, j.cost = false, nil, 0, 0, 0, 0, 0
	seal, err := d.readSeal(j.sealPath, j.name)
	if err != nil {
		return err
	}
	j.seal = seal
	// OpenReadWrite would create a missing file: look first (j is
	// locked, and no one else writes the directory).
	if _, err := d.fs.Stat(j.path); errors.Is(err, fs.ErrNotExist) {
		j.loaded = true
		return nil
	} else if err != nil {
		return fmt.Errorf("journal %q: %w", j.name, err)
	}
	f, err := d.fs.OpenReadWrite(j.path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("journal %q: %w", j.name, err)
	}
	hdrLen, frames, end, size, err := scanFile(f, j.name)
	if err != nil {
		f.Close()
		err = fmt.Errorf("journal %q (%s): %w", j.name, filepath.Base(j.path), err)
		if chunkstore.IsCorruption(err) {
			d.log.Error("corrupt journal: it refuses reads and appends until Trim(name, All, All) removes it (the other copies may hold its records)", "journal", j.name, "err", err)
		}
		return err
	}
	j.hdrLen, j.end, j.size = hdrLen, end, size
	for _, fi := range frames {
		fi.end += hdrLen
		j.frames = append(j.frames, fi)
		j.maxEpoch = max(j.maxEpoch, fi.epoch)
		j.cost += fi.cost
	}
	if j.size > j.end {
		d.m.torn.Inc()
		d.log.Warn("ignoring a torn tail (an append interrupted by a crash); the next append cuts it",
			"journal", j.name, "file", filepath.Base(j.path), "offset", j.end, "bytes", j.size-j.end)
	}
	j.f = f
	j.exists, j.loaded = true, true
	d.touch(j)
	return nil
}

// scanFile reads and checks a whole journal file: its header's size, its
// frames (offsets after the header), the end of the last good one and the
// file's size.
func scanFile(f vfs.File, name string) (hdrLen int64, frames []frameInfo, end, size int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, nil, 0, 0, err
	}
	if st.Size() > maxFile {
		return 0, nil, 0, 0, fmt.Errorf("%w: a file of %d bytes, more than a journal can hold", chunkstore.ErrCorrupt, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return 0, nil, 0, 0, err
	}
	h, err := parseHeader(data, name)
	if err != nil {
		return 0, nil, 0, 0, err
	}
	frames, _, e, err := scanFrames(data, h, false)
	if err != nil {
		return 0, nil, 0, 0, err
	}
	return int64(h), frames, int64(h + e), int64(len(data)), nil
}

// readSeal reads a seal file (0 if there is none).
func (d *Dir) readSeal(path, name string) (uint64, error) {
	data, err := d.readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("journal %q: %w", name, err)
	}
	m := len(sealMagic)
	n := m + 2 + len(name)
	if len(data) != n+12 || string(data[:m]) != sealMagic || int(binary.LittleEndian.Uint16(data[m:])) != len(name) ||
		string(data[m+2:n]) != name || crc32.Checksum(data[:n+8], castagnoli) != binary.LittleEndian.Uint32(data[n+8:]) {
		return 0, fmt.Errorf("%w: journal %q: bad seal file %s", chunkstore.ErrCorrupt, name, filepath.Base(path))
	}
	return binary.LittleEndian.Uint64(data[n:]), nil
}

// Append adds recs to name's journal with one write and one fdatasync.
// It does not keep recs or their payloads.
func (d *Dir) Append(ctx context.Context, name string, epoch uint64, recs []Record) error {
	if err := CheckAppend(name, epoch, recs); err != nil {
		return err
	}
	j, err := d.acquire(ctx, name)
	if err != nil {
		return err
	}
	defer j.mu.Unlock()
	if err := d.load(j); err != nil {
		return err
	}
	if s := j.sealAt(); epoch < s {
		return fmt.Errorf("%w: journal %q is sealed at epoch %d; append at epoch %d refused", ErrFenced, name, s, epoch)
	}
	if j.failed != nil {
		return fmt.Errorf("%w: journal %q: an earlier append failed (%v), so its file cannot take durable appends; reopen the journal directory or Trim(name, All, All) it (its records live on in the other copies)",
			ErrSyncFailed, name, j.failed)
	}
	c := cost(recs)
	if j.cost+c > MaxBytes {
		return fmt.Errorf("%w: journal %q holds %d bytes; %d more exceed the %d limit (commit and trim it)", ErrFull, name, j.cost, c, MaxBytes)
	}
	if !j.exists {
		hdr := encodeHeader(name)
		if err := d.writeAtomic(j.path, hdr); err != nil {
			return fmt.Errorf("journal %q: creating: %w", name, err)
		}
		j.exists, j.hdrLen, j.end, j.size = true, int64(len(hdr)), int64(len(hdr)), int64(len(hdr))
	}
	f, err := d.file(j)
	if err != nil {
		return err
	}
	if j.size > j.end {
		if f, err = d.truncate(j, f, j.end); err != nil {
			return fmt.Errorf("journal %q: cutting a torn tail: %w", name, err)
		}
		d.log.Info("cut a torn tail", "journal", name, "offset", j.end, "bytes", j.size-j.end)
		j.size = j.end
	}
	parts, n := frameParts(epoch, recs)
	err = d.writeAt(f, parts, j.end)
	if err == nil && !d.cfg.NoSync {
		start := time.Now()
		err = d.syncData(f)
		d.m.fsync.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		// The frame may be partly (or, after a failed sync, seemingly)
		// on disk, and after a failed fdatasync the kernel may have
		// dropped pages it reports clean: no later append to this file
		// can be trusted durable. Refuse them (j.failed) until a reopen
		// reads the file again.
		j.size = max(j.size, j.end+n)
		j.failed = err
		d.dropFile(j)
		d.log.Error("journal append failed; refusing appends to it until the directory is reopened", "journal", name, "err", err)
		return fmt.Errorf("journal %q: append: %w (%w)", name, err, ErrSyncFailed)
	}
	j.end += n
	j.size = j.end
	j.frames = append(j.frames, frameInfo{end: j.end, epoch: epoch, lastSeq: recs[len(recs)-1].Seq, cost: c})
	j.maxEpoch = max(j.maxEpoch, epoch)
	j.cost += c
	d.m.appends.Inc()
	d.m.bytes.Add(float64(c - RecordOverhead*int64(len(recs))))
	return nil
}

// Read seals name at seal (durably, before returning) if that is above its
// seal, and returns its records in (Epoch, Seq) order, one per pair. It
// may return records a Trim covered (a Trim that would free little leaves
// the file alone). A journal whose records exceed MaxBytes fails with
// ErrFull; a damaged one with chunkstore.ErrCorrupt.
func (d *Dir) Read(ctx context.Context, name string, seal uint64) ([]Record, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if seal == All {
		return nil, fmt.Errorf("%w: journal %q: seal %d", ErrInvalid, name, seal)
	}
	j, err := d.acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	defer j.mu.Unlock()
	if err := d.load(j); err != nil {
		return nil, err
	}
	if seal > j.sealAt() {
		if err := d.writeSeal(j, seal); err != nil {
			return nil, err
		}
	}
	if len(j.frames) == 0 {
		return nil, nil
	}
	if j.cost > MaxBytes {
		return nil, fmt.Errorf("%w: journal %q holds %d bytes, more than the %d a read returns", ErrFull, name, j.cost, MaxBytes)
	}
	f, err := d.file(j)
	if err != nil {
		return nil, err
	}
	data := make([]byte, j.end)
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("journal %q: read: %w", name, err)
	}
	frames, recs, end, err := scanFrames(data, int(j.hdrLen), true)
	if err == nil && (int64(end) != j.end-j.hdrLen || len(frames) != len(j.frames)) {
		err = fmt.Errorf("%w: a frame changed on disk since it was checked", chunkstore.ErrCorrupt)
	}
	if err != nil {
		j.loaded = false // look again next time
		d.log.Error("corrupt journal", "journal", name, "err", err)
		return nil, fmt.Errorf("journal %q (%s): %w", name, filepath.Base(j.path), err)
	}
	return sortRecords(recs), nil
}

// Trim drops name's records at or before (epoch, seq): it empties the file
// (keeping its header) when every record is covered, rewrites it without
// the covered frames when they are at least 1 MiB or more than half of it,
// and otherwise leaves it alone. Trim(name, All, All) removes the journal
// and its seal. Before records leave the file, the seal they imply is made
// durable in the seal file.
func (d *Dir) Trim(ctx context.Context, name string, epoch, seq uint64) error {
	if err := CheckName(name); err != nil {
		return err
	}
	j, err := d.acquire(ctx, name)
	if err != nil {
		return err
	}
	defer j.mu.Unlock()
	d.m.trims.Inc()
	if epoch == All && seq == All {
		return d.remove(j)
	}
	if err := d.load(j); err != nil {
		return err
	}
	k := 0
	for k < len(j.frames) && (j.frames[k].epoch < epoch || j.frames[k].epoch == epoch && j.frames[k].lastSeq <= seq) {
		k++
	}
	if k == 0 {
		return nil
	}
	if j.maxEpoch > j.seal {
		if err := d.writeSeal(j, j.maxEpoch); err != nil {
			return err
		}
	}
	f, err := d.file(j)
	if err != nil {
		return err
	}
	if k == len(j.frames) {
		// Not synced: should the truncation not survive a crash, the
		// records come back, and callers skip covered records anyway.
		// The next append's fdatasync makes it durable.
		if _, err := d.truncate(j, f, j.hdrLen); err != nil {
			j.loaded = false
			return fmt.Errorf("journal %q: trim: %w", name, err)
		}
		j.end, j.size, j.frames, j.maxEpoch, j.cost = j.hdrLen, j.hdrLen, nil, 0, 0
		return nil
	}
	keep := j.frames[k-1].end
	dead, total := keep-j.hdrLen, j.end-j.hdrLen
	if dead < rewriteMin && 2*dead <= total {
		return nil
	}
	return d.rewrite(j, k)
}

// rewrite replaces j's file by one without its first k frames: a new file
// is written beside it, synced, and renamed over it.
func (d *Dir) rewrite(j *journal, k int) error {
	f, err := d.file(j)
	if err != nil {
		return err
	}
	keep := j.frames[k-1].end
	rest := make([]byte, j.end-keep)
	if _, err := f.ReadAt(rest, keep); err != nil {
		return fmt.Errorf("journal %q: rewrite: %w", j.name, err)
	}
	// Copy only frames that still check.
	if frames, _, end, err := scanFrames(rest, 0, false); err != nil || end != len(rest) || len(frames) != len(j.frames)-k {
		j.loaded = false
		return fmt.Errorf("%w: journal %q: a frame changed on disk since it was checked; not rewriting", chunkstore.ErrCorrupt, j.name)
	}
	hdr := encodeHeader(j.name)
	if err := d.writeAtomic(j.path, hdr, rest); err != nil {
		return fmt.Errorf("journal %q: rewrite: %w", j.name, err)
	}
	d.dropFile(j) // it is the old file
	shift := keep - int64(len(hdr))
	j.frames = append([]frameInfo(nil), j.frames[k:]...)
	j.maxEpoch, j.cost = 0, 0
	for i := range j.frames {
		j.frames[i].end -= shift
		j.maxEpoch = max(j.maxEpoch, j.frames[i].epoch)
		j.cost += j.frames[i].cost
	}
	j.hdrLen = int64(len(hdr))
	j.end -= shift
	j.size = j.end
	d.m.rewrites.Inc()
	return nil
}

// remove deletes j's files (j locked) and forgets it.
func (d *Dir) remove(j *journal) error {
	d.dropFile(j)
	j.loaded = false
	for _, p := range []string{j.path, j.sealPath} {
		if err := d.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %q: %w", j.name, err)
		}
	}
	if err := d.syncDir(); err != nil {
		return fmt.Errorf("journal %q: %w", j.name, err)
	}
	j.gone = true
	j.failed = nil
	d.mu.Lock()
	if d.names[j.name] == j {
		delete(d.names, j.name)
	}
	d.mu.Unlock()
	return nil
}

// writeSeal makes seal j's seal, durably.
func (d *Dir) writeSeal(j *journal, seal uint64) error {
	if err := d.writeAtomic(j.sealPath, encodeSeal(j.name, seal)); err != nil {
		return fmt.Errorf("journal %q: sealing at epoch %d: %w", j.name, seal, err)
	}
	j.seal = seal
	return nil
}

type dirMetrics struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
	appends    prometheus.Counter
	bytes      prometheus.Counter
	fsync      prometheus.Histogram
	trims      prometheus.Counter
	rewrites   prometheus.Counter
	torn       prometheus.Counter
}

func newDirMetrics(reg *prometheus.Registry) *dirMetrics {
	m := &dirMetrics{
		reg:     reg,
		appends: prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_journal_appends_total", Help: "Journal appends (one write and one fdatasync each)."}),
		bytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_journal_appended_bytes_total", Help: "Payload bytes appended to journals."}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zos_journal_fsync_seconds", Help: "Time of a journal append's fdatasync.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		trims:    prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_journal_trims_total", Help: "Journal trims."}),
		rewrites: prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_journal_rewrites_total", Help: "Trims that rewrote a journal without its covered prefix."}),
		torn:     prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_journal_torn_tails_total", Help: "Torn tails (appends interrupted by a crash) found when loading journals."}),
	}
	m.collectors = []prometheus.Collector{m.appends, m.bytes, m.fsync, m.trims, m.rewrites, m.torn}
	if reg != nil {
		for _, c := range m.collectors {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *dirMetrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
