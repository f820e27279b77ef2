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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"golang.org/x/sys/unix"
)

// DirConfig configures a Dir.
type DirConfig struct {
	// Dir holds the journal files; it is created if missing. Required.
	Dir string
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
	lock *os.File // flock'ed: one process per directory

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

	mu       sync.Mutex
	gone     bool // no longer in Dir.names (Trim All, Close): look it up again
	loaded   bool // the fields below reflect the files
	exists   bool // the journal file exists
	f        *os.File
	elem     *list.Element
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
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("journal: %s is in use by another Dir or process (flock: %v)", cfg.Dir, err)
	}
	d := &Dir{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "journal", "dir", cfg.Dir),
		lock:  lock,
		names: map[string]*journal{},
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("journal: %w", err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tmpExt) {
			d.log.Info("removing the leftover of an interrupted write", "file", e.Name())
			if err := os.Remove(filepath.Join(cfg.Dir, e.Name())); err != nil {
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
			base := filepath.Join(d.cfg.Dir, fileBase(name))
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
func (d *Dir) file(j *journal) (*os.File, error) {
	if j.f == nil {
		f, err := os.OpenFile(j.path, os.O_RDWR, 0)
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
	seal, err := readSeal(j.sealPath, j.name)
	if err != nil {
		return err
	}
	j.seal = seal
	f, err := os.OpenFile(j.path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		j.loaded = true
		return nil
	}
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
func scanFile(f *os.File, name string) (hdrLen int64, frames []frameInfo, end, size int64, err error) {
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

// encodeHeader is a journal file's header: magic | name len u16 | name |
// crc32c u32 of the preceding bytes.
func encodeHeader(name string) []byte {
	b := append([]byte(fileMagic), 0, 0)
	binary.LittleEndian.PutUint16(b[len(fileMagic):], uint16(len(name)))
	b = append(b, name...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// parseHeader checks the header at the start of data and returns its size.
func parseHeader(data []byte, name string) (int, error) {
	m := len(fileMagic)
	if len(data) < m+2 || string(data[:m]) != fileMagic {
		return 0, fmt.Errorf("%w: not a journal file (bad magic)", chunkstore.ErrCorrupt)
	}
	n := m + 2 + int(binary.LittleEndian.Uint16(data[m:]))
	if len(data) < n+4 || crc32.Checksum(data[:n], castagnoli) != binary.LittleEndian.Uint32(data[n:]) {
		return 0, fmt.Errorf("%w: bad journal header", chunkstore.ErrCorrupt)
	}
	if got := string(data[m+2 : n]); got != name {
		return 0, fmt.Errorf("%w: the file holds journal %q", chunkstore.ErrCorrupt, got)
	}
	return n + 4, nil
}

// encodeSeal is a seal file: magic | name len u16 | name | seal u64 |
// crc32c u32 of the preceding bytes.
func encodeSeal(name string, seal uint64) []byte {
	b := append([]byte(sealMagic), 0, 0)
	binary.LittleEndian.PutUint16(b[len(sealMagic):], uint16(len(name)))
	b = append(b, name...)
	b = binary.LittleEndian.AppendUint64(b, seal)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// readSeal reads a seal file (0 if there is none).
func readSeal(path, name string) (uint64, error) {
	data, err := os.ReadFile(path)
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

// frameParts encodes one append as a frame, returned as parts (the
// payloads are not copied) and its size:
//
//	size u32 | crc32c u32 | epoch u64 | count u32 | count × (seq u64 | len u32 | payload)
//
// size counts the bytes after the crc, which covers them.
func frameParts(epoch uint64, recs []Record) ([][]byte, int64) {
	heads := make([]byte, framePrefix+frameHead+len(recs)*recHead)
	binary.LittleEndian.PutUint64(heads[8:], epoch)
	binary.LittleEndian.PutUint32(heads[16:], uint32(len(recs)))
	crc := crc32.Update(0, castagnoli, heads[framePrefix:framePrefix+frameHead])
	parts := make([][]byte, 0, 1+2*len(recs))
	size := frameHead
	start, pos := 0, framePrefix+frameHead
	for _, r := range recs {
		h := heads[pos : pos+recHead]
		binary.LittleEndian.PutUint64(h, r.Seq)
		binary.LittleEndian.PutUint32(h[8:], uint32(len(r.Payload)))
		crc = crc32.Update(crc, castagnoli, h)
		crc = crc32.Update(crc, castagnoli, r.Payload)
		pos += recHead
		size += recHead + len(r.Payload)
		if len(r.Payload) > 0 {
			parts = append(parts, heads[start:pos], r.Payload)
			start = pos
		}
	}
	if start < pos {
		parts = append(parts, heads[start:pos])
	}
	binary.LittleEndian.PutUint32(heads[0:], uint32(size))
	binary.LittleEndian.PutUint32(heads[4:], crc)
	return parts, int64(framePrefix + size)
}

// parseFrame decodes the frame at data[off:], appending its records to
// recs (their payloads alias data). why says what is wrong if it is not a
// good frame.
func parseFrame(data []byte, off int, recs []Record) (next int, epoch uint64, out []Record, why string) {
	if len(data)-off < framePrefix {
		return 0, 0, recs, "truncated frame header"
	}
	size := int(binary.LittleEndian.Uint32(data[off:]))
	if size < minFrameBody || size > maxFrameBody {
		return 0, 0, recs, fmt.Sprintf("frame size %d", size)
	}
	if size > len(data)-off-framePrefix {
		return 0, 0, recs, fmt.Sprintf("frame of %d bytes runs past the end", size)
	}
	body := data[off+framePrefix : off+framePrefix+size]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
		return 0, 0, recs, "checksum mismatch"
	}
	epoch = binary.LittleEndian.Uint64(body)
	n := binary.LittleEndian.Uint32(body[8:])
	if epoch == 0 || n == 0 || n > MaxRecords {
		return 0, 0, recs, fmt.Sprintf("frame of epoch %d with %d records", epoch, n)
	}
	p := body[frameHead:]
	mark := len(recs)
	for range n {
		if len(p) < recHead {
			return 0, 0, recs[:mark], "records run past the frame"
		}
		seq := binary.LittleEndian.Uint64(p)
		l := int(binary.LittleEndian.Uint32(p[8:]))
		p = p[recHead:]
		if l > len(p) {
			return 0, 0, recs[:mark], "a payload runs past the frame"
		}
		recs = append(recs, Record{Epoch: epoch, Seq: seq, Payload: p[:l:l]})
		p = p[l:]
	}
	if len(p) != 0 {
		return 0, 0, recs[:mark], fmt.Sprintf("%d bytes after the records", len(p))
	}
	return off + framePrefix + size, epoch, recs, ""
}

// scanFrames reads the frames of data from start: their descriptions
// (offsets relative to start), their records if keep, and the end of the
// last good one. A bad frame ends the scan: it and what follows are a torn
// tail (an append a crash interrupted), unless a good frame follows it,
// which means a damaged acknowledged append: chunkstore.ErrCorrupt.
func scanFrames(data []byte, start int, keep bool) (frames []frameInfo, recs []Record, end int, err error) {
	off := start
	for off < len(data) {
		mark := len(recs)
		next, epoch, out, why := parseFrame(data, off, recs)
		if why != "" {
			if followedByFrame(data, off) {
				return nil, nil, 0, fmt.Errorf("%w: bad frame at offset %d (%s) followed by good frames", chunkstore.ErrCorrupt, off, why)
			}
			break
		}
		rs := out[mark:]
		frames = append(frames, frameInfo{end: int64(next - start), epoch: epoch, lastSeq: rs[len(rs)-1].Seq, cost: cost(rs)})
		recs = out
		if !keep {
			recs = out[:0] // scratch for the next frame
		}
		off = next
	}
	if !keep {
		recs = nil
	}
	return frames, recs, off - start, nil
}

// followedByFrame reports whether the bad frame at off has a plausible size
// and a good frame right after it.
func followedByFrame(data []byte, off int) bool {
	if len(data)-off < framePrefix {
		return false
	}
	size := int(binary.LittleEndian.Uint32(data[off:]))
	if size < minFrameBody || size > maxFrameBody || size >= len(data)-off-framePrefix {
		return false
	}
	_, _, _, why := parseFrame(data, off+framePrefix+size, nil)
	return why == ""
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
		if err := f.Truncate(j.end); err != nil {
			return fmt.Errorf("journal %q: cutting a torn tail: %w", name, err)
		}
		d.log.Info("cut a torn tail", "journal", name, "offset", j.end, "bytes", j.size-j.end)
		j.size = j.end
	}
	parts, n := frameParts(epoch, recs)
	err = pwritev(f, parts, j.end)
	if err == nil && !d.cfg.NoSync {
		start := time.Now()
		err = fdatasync(f)
		d.m.fsync.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		// The frame may be partly (or, after a failed sync, seemingly)
		// on disk: the next append cuts it; reopen the file then.
		j.size = max(j.size, j.end+n)
		d.dropFile(j)
		return fmt.Errorf("journal %q: append: %w", name, err)
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
		if err := f.Truncate(j.hdrLen); err != nil {
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
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %q: %w", j.name, err)
		}
	}
	if err := d.syncDir(); err != nil {
		return fmt.Errorf("journal %q: %w", j.name, err)
	}
	j.gone = true
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

// writeAtomic replaces path with parts: written to a temporary file,
// synced, renamed over path, and the directory synced. A crash leaves the
// old file or the new one (and maybe a temporary file OpenDir removes).
func (d *Dir) writeAtomic(path string, parts ...[]byte) error {
	tmp := path + tmpExt
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = pwritev(f, parts, 0)
	if err == nil && !d.cfg.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return d.syncDir()
}

func (d *Dir) syncDir() error {
	if d.cfg.NoSync {
		return nil
	}
	f, err := os.Open(d.cfg.Dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// pwritev writes parts at off with as few pwritev calls as the kernel
// allows (one, for up to 1024 parts).
func pwritev(f *os.File, parts [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	parts = append([][]byte(nil), parts...) // advanced below; the caller's stays
	for {
		for len(parts) > 0 && len(parts[0]) == 0 {
			parts = parts[1:]
		}
		if len(parts) == 0 {
			return nil
		}
		batch := parts[:min(len(parts), maxIov)]
		var n int
		var werr error
		if err := rc.Control(func(fd uintptr) { n, werr = unix.Pwritev(int(fd), batch, off) }); err != nil {
			return err
		}
		if errors.Is(werr, unix.EINTR) {
			continue
		}
		if werr != nil {
			return werr
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		for n > 0 {
			if n >= len(parts[0]) {
				n -= len(parts[0])
				parts = parts[1:]
			} else {
				parts[0] = parts[0][n:]
				n = 0
			}
		}
	}
}

func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); !errors.Is(serr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
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
