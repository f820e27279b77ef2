package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/internal/bufpool"
	"github.com/zosproject/zos/internal/slogx"
)

// Errors.
var (
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("disk: store closed")
	// ErrIO: the disk returned an error reading or writing. Not corruption:
	// the bytes on disk may be fine.
	ErrIO = errors.New("disk: i/o error")
)

// Store is the local shard store. It is safe for concurrent use.
type Store struct {
	cfg    Config
	log    *slog.Logger
	fs     vfs.FS
	db     *pebble.DB
	segDir string

	mu     sync.RWMutex
	segs   map[uint32]*segment
	active *segment // written only by the writer goroutine

	ops     chan *op
	closing chan struct{}
	stopped chan struct{} // writer exited
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	once    sync.Once

	compactMu sync.Mutex // one compaction at a time
	// settled: segments below this id hold no record whose group commit
	// is still in flight (the committer raises it; writer.go), so
	// compaction may take them.
	settled atomic.Uint32

	pages pageWindow // writer-only: synced ranges left in the page cache (pagecache.go)

	filter keyFilter // index keys: the writer adds, anyone asks (filter.go)
	// profiles lists every profile of a key set in the index since Open,
	// sorted in key order (copy on write; the writer and load add).
	profiles  atomic.Pointer[[]chunkstore.Profile]
	shards    atomic.Int64
	dataBytes atomic.Int64
	corrupt   atomic.Int64
	compacted atomic.Int64
	written   atomic.Int64
	read      atomic.Int64
	rollNext  bool   // writer-only: roll before the next append (after a failed sync)
	wbuf      []byte // writer-only: records of the group not yet written (see flush)

	metrics *metrics
}

// segment is one segment file.
type segment struct {
	id     uint32
	path   string
	f      vfs.File
	size   atomic.Int64 // logical end: records live below it
	live   atomic.Int64 // bytes of live records (headers included)
	refs   atomic.Int64 // readers holding f, plus one while in the map
	gone   atomic.Bool  // retired: remove the file on last release
	synced int64        // writer-only: the end of the range last synced (pagecache.go)
}

func segName(id uint32) string { return fmt.Sprintf("%08d.seg", id) }

// Open opens or creates the store in cfg.Dir. At open, bytes past the last
// live record of the newest segment (a torn or unacknowledged tail) are
// dropped, and sealed segments without live records are deleted.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Store{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "disk", "dir", cfg.Dir),
		fs:      cfg.FS,
		segDir:  cfg.FS.PathJoin(cfg.Dir, "seg"),
		segs:    map[uint32]*segment{},
		ops:     make(chan *op, 256),
		wbuf:    make([]byte, 0, writeBufSize),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if err := s.fs.MkdirAll(s.segDir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIO, err)
	}
	if !cfg.NoSync {
		// Make the directories themselves durable (a crash must not lose
		// the segment directory's entry).
		for _, d := range []string{s.segDir, cfg.Dir, s.fs.PathDir(cfg.Dir)} {
			if err := s.syncDirPath(d); err != nil {
				return nil, fmt.Errorf("%w: sync %s: %v", ErrIO, d, err)
			}
		}
	}
	cache := pebble.NewCache(cfg.CacheSize)
	defer cache.Unref()
	opts := &pebble.Options{
		FS:     s.fs,
		Cache:  cache,
		Logger: slogx.Pebble{L: s.log.With("component", "disk-index")},
	}
	// Every put looks its keys up first (same bytes stored already?), and
	// shard keys are random, so most lookups miss: bloom filters let a miss
	// skip the sstables (L1+ inherit L0's policy).
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(s.fs.PathJoin(cfg.Dir, "index"), opts)
	if err != nil {
		return nil, fmt.Errorf("%w: open index: %v", ErrIO, err)
	}
	s.db = db
	if err := s.load(); err != nil {
		s.closeFiles()
		_ = db.Close()
		return nil, err
	}
	s.metrics = newMetrics(s, cfg.Registry)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(s.writeLoop)
	if cfg.CompactInterval > 0 {
		s.wg.Go(func() { s.compactLoop(ctx) })
	}
	return s, nil
}

// load opens the segment files and rebuilds the in-memory accounting from
// the index.
func (s *Store) load() error {
	names, err := s.fs.List(s.segDir)
	if err != nil {
		return fmt.Errorf("%w: list segments: %v", ErrIO, err)
	}
	var ids []uint32
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ".seg")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(base, 10, 32)
		if err != nil {
			continue
		}
		ids = append(ids, uint32(id))
	}
	slices.Sort(ids)
	// Live bytes and ends per segment from the index.
	live := map[uint32]int64{}
	end := map[uint32]int64{}
	var missing int
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{indexPrefix}, UpperBound: []byte{indexPrefix + 1}})
	if err != nil {
		return fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	for it.First(); it.Valid(); it.Next() {
		l, err := decodeLoc(it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		k, err := keyFromIndex(it.Key())
		if err != nil {
			_ = it.Close()
			return err
		}
		s.filter.add(k)
		s.noteProfile(k.Profile)
		live[l.seg] += l.recordLen()
		end[l.seg] = max(end[l.seg], l.off+l.recordLen())
		s.shards.Add(1)
		s.dataBytes.Add(int64(l.size))
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	for i, id := range ids {
		path := s.fs.PathJoin(s.segDir, segName(id))
		last := i == len(ids)-1
		var f vfs.File
		if last {
			f, err = s.fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		} else {
			f, err = s.fs.Open(path)
		}
		if err != nil {
			return fmt.Errorf("%w: open segment %d: %v", ErrIO, id, err)
		}
		seg := &segment{id: id, path: path, f: f}
		seg.refs.Store(1)
		s.adviseSegment(f)
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("%w: stat segment %d: %v", ErrIO, id, err)
		}
		hdr := make([]byte, segHeaderLen)
		_, herr := f.ReadAt(hdr, 0)
		if herr == nil {
			herr = checkSegmentHeader(hdr, id)
		}
		if herr != nil && live[id] == 0 {
			// A segment file created but never synced with a header, or
			// garbage: nothing points into it.
			s.log.Warn("removing unusable empty segment", "segment", id, "err", herr)
			_ = f.Close()
			_ = s.fs.Remove(path)
			continue
		}
		if herr != nil {
			s.log.Error("segment header unreadable; its shards will read as corrupt", "segment", id, "err", herr)
		}
		size := fi.Size()
		if last {
			// The newest segment's tail past its last live record holds
			// nothing acknowledged: a torn record, or records whose index
			// commit never happened. Writes continue at the last live end.
			logical := max(end[id], segHeaderLen)
			if size > logical {
				recs, torn := s.scanTail(f, logical, size)
				s.log.Info("dropped segment tail", "segment", id, "bytes", size-logical, "unacknowledged_records", recs, "torn_bytes", torn)
			}
			size = logical
		}
		seg.size.Store(size)
		seg.live.Store(live[id])
		s.segs[id] = seg
		if !last && live[id] == 0 {
			s.retire(seg)
		}
	}
	for id, n := range live {
		if s.segs[id] == nil {
			missing += int(n)
			s.log.Error("index points into a missing segment; its shards will read as corrupt", "segment", id, "bytes", n)
		}
	}
	_ = missing
	// The active segment: the newest if it has room, else a new one.
	var newest *segment
	if len(ids) > 0 {
		newest = s.segs[ids[len(ids)-1]]
	}
	if newest == nil || newest.size.Load() >= s.cfg.SegmentSize {
		next := uint32(1)
		if len(ids) > 0 {
			next = ids[len(ids)-1] + 1
		}
		seg, err := s.createSegment(next)
		if err != nil {
			return err
		}
		s.segs[seg.id] = seg
		newest = seg
	}
	s.active = newest
	s.settled.Store(newest.id)
	return nil
}

// scanTail counts the well-formed records and the torn bytes in f[from:to],
// for the log.
func (s *Store) scanTail(f vfs.File, from, to int64) (records int, torn int64) {
	hdr := make([]byte, recHeaderLen)
	off := from
	for off+recHeaderLen <= to {
		if _, err := f.ReadAt(hdr, off); err != nil {
			break
		}
		si, err := parseRecordHeader(hdr)
		if err != nil || off+recHeaderLen+int64(si.Size) > to {
			break
		}
		data := make([]byte, si.Size)
		if _, err := f.ReadAt(data, off+recHeaderLen); err != nil && !errors.Is(err, io.EOF) {
			break
		}
		if chunkstore.ShardSum(data) != si.Sum {
			break
		}
		records++
		off += recHeaderLen + int64(si.Size)
	}
	return records, to - off
}

// adviseSegment turns off readahead on a segment file (see adviseRandom).
func (s *Store) adviseSegment(f vfs.File) {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		adviseRandom(fd)
	}
}

func (s *Store) createSegment(id uint32) (*segment, error) {
	path := s.fs.PathJoin(s.segDir, segName(id))
	f, err := s.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("%w: create segment %d: %v", ErrIO, id, err)
	}
	fail := func(err error) (*segment, error) {
		_ = f.Close()
		_ = s.fs.Remove(path)
		return nil, fmt.Errorf("%w: create segment %d: %v", ErrIO, id, err)
	}
	s.adviseSegment(f)
	if n, err := f.WriteAt(segmentHeader(id), 0); err != nil || n != segHeaderLen {
		if err == nil {
			err = io.ErrShortWrite
		}
		return fail(err)
	}
	if !s.cfg.NoSync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
		if err := s.syncDir(); err != nil {
			return fail(err)
		}
	}
	seg := &segment{id: id, path: path, f: f}
	seg.size.Store(segHeaderLen)
	seg.refs.Store(1)
	return seg, nil
}

func (s *Store) syncDir() error { return s.syncDirPath(s.segDir) }

func (s *Store) syncDirPath(dir string) error {
	d, err := s.fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// acquire returns the open segment id with a reference, or nil if it has
// been retired or never existed.
func (s *Store) acquire(id uint32) *segment {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seg := s.segs[id]
	if seg == nil {
		return nil
	}
	seg.refs.Add(1)
	return seg
}

func (s *Store) release(seg *segment) {
	if seg.refs.Add(-1) == 0 && seg.gone.Load() {
		_ = seg.f.Close()
		if err := s.fs.Remove(seg.path); err != nil {
			s.log.Warn("remove retired segment", "segment", seg.id, "err", err)
		}
	}
}

// retire removes seg from the map; its file goes when the last reader
// releases it.
func (s *Store) retire(seg *segment) {
	s.mu.Lock()
	if s.segs[seg.id] != seg {
		s.mu.Unlock()
		return
	}
	delete(s.segs, seg.id)
	s.mu.Unlock()
	seg.gone.Store(true)
	s.release(seg)
}

func (s *Store) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, seg := range s.segs {
		_ = seg.f.Close()
		delete(s.segs, id)
	}
}

// Close stops background work, waits for it, and closes the files. Pending
// and later calls fail with ErrClosed.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closing)
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		s.compactMu.Lock() // wait for a Compact call in progress
		defer s.compactMu.Unlock()
		s.metrics.unregister()
		s.closeFiles()
		err = s.db.Close()
	})
	return err
}

func (s *Store) checkOpen(ctx context.Context) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	return ctx.Err()
}

// lookup reads the index entry of a concrete key.
func (s *Store) lookup(k chunkstore.ShardKey) (loc, error) {
	v, closer, err := s.db.Get(indexKey(k))
	if errors.Is(err, pebble.ErrNotFound) {
		return loc{}, fmt.Errorf("%w: shard %s", chunkstore.ErrNotFound, k)
	}
	if err != nil {
		return loc{}, fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	defer closer.Close()
	return decodeLoc(v)
}

// find is lookup for readers: a key the filter never saw is not looked up.
func (s *Store) find(k chunkstore.ShardKey) (loc, error) {
	if !s.filter.mayContain(k) {
		s.metrics.filterSkips.Inc()
		return loc{}, fmt.Errorf("%w: shard %s", chunkstore.ErrNotFound, k)
	}
	return s.lookup(k)
}

// maxPointProfiles bounds the profiles resolve tries one by one before it
// scans instead.
const maxPointProfiles = 4

// noteProfile records that keys of profile p are in the index.
func (s *Store) noteProfile(p chunkstore.Profile) {
	cur := s.profiles.Load()
	if cur != nil && slices.Contains(*cur, p) {
		return
	}
	var next []chunkstore.Profile
	if cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, p)
	slices.SortFunc(next, func(a, b chunkstore.Profile) int {
		if a.K != b.K {
			return int(a.K) - int(b.K)
		}
		return int(a.M) - int(b.M)
	})
	s.profiles.Store(&next)
}

// resolve finds the first shard matching a (possibly wildcard) key.
func (s *Store) resolve(k chunkstore.ShardKey) (chunkstore.ShardKey, loc, error) {
	if !k.IsQuery() {
		l, err := s.find(k)
		return k, l, err
	}
	if k.Index != chunkstore.AnyIndex {
		// Any profile, one index (what a read asks first): a point lookup
		// per profile this store holds, in key order, is much cheaper than
		// an iterator over the Ref's keys — when the store holds only a
		// few profiles, as stores do.
		if ps := s.profiles.Load(); ps != nil && len(*ps) <= maxPointProfiles {
			for _, p := range *ps {
				if int(k.Index) >= int(p.K)+int(p.M) {
					continue
				}
				c := chunkstore.ShardKey{Ref: k.Ref, Profile: p, Index: k.Index}
				l, err := s.find(c)
				if errors.Is(err, chunkstore.ErrNotFound) {
					continue
				}
				return c, l, err
			}
			return k, loc{}, fmt.Errorf("%w: shard %s", chunkstore.ErrNotFound, k)
		}
	}
	var found bool
	var fk chunkstore.ShardKey
	var fl loc
	err := s.scanRef(k.Ref, func(c chunkstore.ShardKey, l loc) bool {
		if k.Matches(c) {
			found, fk, fl = true, c, l
			return false
		}
		return true
	})
	if err != nil {
		return k, loc{}, err
	}
	if !found {
		return k, loc{}, fmt.Errorf("%w: shard %s", chunkstore.ErrNotFound, k)
	}
	return fk, fl, nil
}

// scanRef calls fn for every indexed shard of ref until fn returns false.
func (s *Store) scanRef(ref chunkstore.Ref, fn func(chunkstore.ShardKey, loc) bool) error {
	lo := append([]byte{indexPrefix}, ref[:]...)
	hi := bytes.Clone(lo)
	hi = append(hi, 0xff, 0xff, 0xff, 0xff)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	for it.First(); it.Valid(); it.Next() {
		k, err := keyFromIndex(it.Key())
		if err != nil {
			_ = it.Close()
			return err
		}
		l, err := decodeLoc(it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		if !fn(k, l) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	return nil
}

// readRecord reads and verifies the record of k at l. A verification failure
// quarantines the shard (drops it from the index) and returns ErrCorrupt.
func (s *Store) readRecord(k chunkstore.ShardKey, l loc) (chunkstore.Shard, func(), error) {
	var buf []byte
	sh, err := s.readRecordInto(k, l, func(n int) []byte {
		buf = bufpool.Get(n)
		return buf
	})
	if err != nil || buf == nil {
		if buf != nil {
			bufpool.Put(buf)
		}
		return sh, nil, err
	}
	return sh, func() { bufpool.Put(buf) }, nil
}

func (s *Store) readRecordInto(k chunkstore.ShardKey, l loc, alloc func(int) []byte) (chunkstore.Shard, error) {
	seg, err := s.segmentOf(k, &l)
	if err != nil {
		return chunkstore.Shard{}, err
	}
	buf := alloc(int(l.recordLen()))
	err = s.readAt(seg, k, l, buf, l.off)
	s.release(seg)
	if err != nil {
		return chunkstore.Shard{}, err
	}
	if err := s.checkHeader(k, l, buf); err != nil {
		return chunkstore.Shard{}, err
	}
	sh := chunkstore.Shard{ShardInfo: l.info(k), Data: buf[recHeaderLen:]}
	if err := sh.Verify(); err != nil {
		return chunkstore.Shard{}, s.quarantine(k, l, fmt.Errorf("%w (segment %d offset %d)", err, l.seg, l.off))
	}
	return sh, nil
}

// segmentOf acquires the segment holding k's record at *l, following the
// record when compaction moved it (updating *l). The caller releases it.
func (s *Store) segmentOf(k chunkstore.ShardKey, l *loc) (*segment, error) {
	for attempt := 0; ; attempt++ {
		if seg := s.acquire(l.seg); seg != nil {
			return seg, nil
		}
		nl, err := s.lookup(k)
		if err != nil {
			return nil, err
		}
		if nl.seg == l.seg && nl.off == l.off || attempt >= 3 {
			return nil, s.quarantine(k, *l, fmt.Errorf("%w: shard %s: segment %d is missing", chunkstore.ErrCorrupt, k, l.seg))
		}
		*l = nl
	}
}

// readAt fills buf from seg at off, a part of k's record at l: a record
// cut short quarantines the shard.
func (s *Store) readAt(seg *segment, k chunkstore.ShardKey, l loc, buf []byte, off int64) error {
	n, err := seg.f.ReadAt(buf, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		if errors.Is(err, io.EOF) {
			return s.quarantine(k, l, fmt.Errorf("%w: shard %s: record truncated at segment %d offset %d", chunkstore.ErrCorrupt, k, l.seg, l.off))
		}
		return fmt.Errorf("%w: read shard %s: %v", ErrIO, k, err)
	}
	s.read.Add(int64(len(buf)))
	return nil
}

// checkHeader checks a record's header against its index entry: a
// mismatch quarantines the shard.
func (s *Store) checkHeader(k chunkstore.ShardKey, l loc, hdr []byte) error {
	si, err := parseRecordHeader(hdr)
	if err == nil && (si.Key != k || si.Size != l.size || si.Sum != l.sum || si.ChunkSize != l.chunk) {
		err = fmt.Errorf("%w: record header does not match the index", chunkstore.ErrCorrupt)
	}
	if err != nil {
		return s.quarantine(k, l, fmt.Errorf("shard %s at segment %d offset %d: %w", k, l.seg, l.off, err))
	}
	return nil
}

// readRange reads r.Len bytes at r.Off of the data of k's record at l,
// after checking the record's header against the index. The bytes are
// not checked (a part of a shard cannot be against its checksum).
func (s *Store) readRange(k chunkstore.ShardKey, l loc, r chunkstore.ShardRange) (chunkstore.Shard, func(), error) {
	if r.Off > l.size || r.Len > l.size-r.Off {
		return chunkstore.Shard{}, nil, fmt.Errorf("%w: [%d, +%d) of the %d-byte shard %s", chunkstore.ErrBadRange, r.Off, r.Len, l.size, k)
	}
	seg, err := s.segmentOf(k, &l)
	if err != nil {
		return chunkstore.Shard{}, nil, err
	}
	defer s.release(seg)
	fail := func(buf []byte, err error) (chunkstore.Shard, func(), error) {
		bufpool.Put(buf)
		return chunkstore.Shard{}, nil, err
	}
	var buf, data []byte
	if r.Off <= rangeGap { // header and data in one read
		buf = bufpool.Get(recHeaderLen + int(r.Off) + int(r.Len))
		if err := s.readAt(seg, k, l, buf, l.off); err != nil {
			return fail(buf, err)
		}
		if err := s.checkHeader(k, l, buf[:recHeaderLen]); err != nil {
			return fail(buf, err)
		}
		data = buf[recHeaderLen+int(r.Off):]
	} else {
		var hdr [recHeaderLen]byte
		if err := s.readAt(seg, k, l, hdr[:], l.off); err != nil {
			return chunkstore.Shard{}, nil, err
		}
		if err := s.checkHeader(k, l, hdr[:]); err != nil {
			return chunkstore.Shard{}, nil, err
		}
		buf = bufpool.Get(int(r.Len))
		if err := s.readAt(seg, k, l, buf, l.off+recHeaderLen+int64(r.Off)); err != nil {
			return fail(buf, err)
		}
		data = buf
	}
	return chunkstore.Shard{ShardInfo: l.info(k), Data: data[:r.Len:r.Len]}, func() { bufpool.Put(buf) }, nil
}

// rangeGap: a range starting at most this far into a shard's data is
// read with its record's header in one read (the bytes between are read
// and dropped); one further in takes a second read.
const rangeGap = 16 << 10

// quarantine drops a corrupt shard from the index (if it still points at
// l), so that a repair can write it afresh, counts it, and returns cause.
func (s *Store) quarantine(k chunkstore.ShardKey, l loc, cause error) error {
	s.corrupt.Add(1)
	s.metrics.corrupt.Inc()
	s.log.Warn("corrupt shard quarantined", "shard", k.String(), "err", cause)
	o := &op{kind: opQuarantine, keys: []chunkstore.ShardKey{k}, qloc: l, done: make(chan struct{})}
	if err := s.submit(context.Background(), o); err != nil {
		s.log.Warn("quarantine failed", "shard", k.String(), "err", err)
	}
	return cause
}

// GetShards reads and verifies shards. Each shard read sets Release (its
// buffer is pooled).
func (s *Store) GetShards(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	if err := s.checkOpen(ctx); err != nil {
		return nil, err
	}
	res := make([]chunkstore.ShardResult, len(keys))
	for i, k := range keys {
		if i%16 == 15 {
			if err := s.checkOpen(ctx); err != nil {
				return nil, err
			}
		}
		ck, l, err := s.resolve(k)
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i].Shard, res[i].Release, res[i].Err = s.readRecord(ck, l)
	}
	return res, nil
}

// GetShardRanges implements chunkstore.ShardRangeGetter: parts of shards,
// their records' headers checked against the index but their bytes not
// (callers verify what they assemble). Each result read sets Release.
func (s *Store) GetShardRanges(ctx context.Context, rs []chunkstore.ShardRange) ([]chunkstore.ShardResult, error) {
	if err := s.checkOpen(ctx); err != nil {
		return nil, err
	}
	res := make([]chunkstore.ShardResult, len(rs))
	for i, r := range rs {
		if i%16 == 15 {
			if err := s.checkOpen(ctx); err != nil {
				chunkstore.ReleaseResults(res)
				return nil, err
			}
		}
		if err := r.Check(); err != nil {
			res[i].Err = err
			continue
		}
		l, err := s.find(r.Key)
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i].Shard, res[i].Release, res[i].Err = s.readRange(r.Key, l, r)
	}
	return res, nil
}

// StatShards reports shard headers from the index without reading data.
func (s *Store) StatShards(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	if err := s.checkOpen(ctx); err != nil {
		return nil, err
	}
	res := make([]chunkstore.ShardResult, len(keys))
	for i, k := range keys {
		ck, l, err := s.resolve(k)
		if err != nil {
			res[i].Err = err
			continue
		}
		res[i].Shard.ShardInfo = l.info(ck)
	}
	return res, nil
}

// EnumerateShards lists up to limit shard headers after after.
func (s *Store) EnumerateShards(ctx context.Context, after chunkstore.ShardKey, limit int) ([]chunkstore.ShardInfo, error) {
	if err := s.checkOpen(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	lo := append(indexKey(after), 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: []byte{indexPrefix + 1}})
	if err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	var out []chunkstore.ShardInfo
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		k, err := keyFromIndex(it.Key())
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		l, err := decodeLoc(it.Value())
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		out = append(out, l.info(k))
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	return out, nil
}

// PutShards validates the shards (shape and checksum) and stores them
// durably in one group commit with other concurrent writers. A shard already
// stored with the same checksum is not rewritten; only its write time is
// refreshed. The shards' data is not read after PutShards returns (a
// cancelled ctx abandons the write only if it has not started).
func (s *Store) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if err := s.checkOpen(ctx); err != nil {
		return err
	}
	var total int64
	for _, sh := range shards {
		if err := sh.CheckShape(); err != nil {
			return err
		}
		if err := sh.Verify(); err != nil {
			return err
		}
		total += int64(len(sh.Data))
	}
	if len(shards) == 0 {
		return nil
	}
	// Batches larger than a group are split (each part is durable on its
	// own; the call is durable when all are).
	for len(shards) > 0 {
		n, sz := 0, int64(0)
		for n < len(shards) && (n == 0 || sz+int64(len(shards[n].Data)) <= s.cfg.MaxBatchBytes) {
			sz += int64(len(shards[n].Data))
			n++
		}
		o := &op{kind: opPut, shards: shards[:n], bytes: sz, done: make(chan struct{})}
		if err := s.submit(ctx, o); err != nil {
			return err
		}
		shards = shards[n:]
	}
	return nil
}

// DeleteShards deletes matching shards (see chunkstore.ShardDeleter).
func (s *Store) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey, writtenBefore int64) (int, error) {
	if err := s.checkOpen(ctx); err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	o := &op{kind: opDelete, keys: keys, before: writtenBefore, done: make(chan struct{})}
	if err := s.submit(ctx, o); err != nil {
		return 0, err
	}
	return o.deleted, nil
}

// submit queues o for the writer and waits for it. A cancelled ctx
// abandons the op if the writer has not taken it yet (it is then never
// applied); once taken, submit waits for it to be applied, so that no
// caller's shard data is read after its call returned (callers reuse
// their buffers).
func (s *Store) submit(ctx context.Context, o *op) error {
	select {
	case s.ops <- o:
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-o.done:
		return o.err
	case <-s.stopped:
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return ctx.Err()
		}
		select {
		case <-o.done:
			return o.err
		case <-s.stopped:
		}
	}
	// The writer finished; it closed o.done if it took o.
	select {
	case <-o.done:
		return o.err
	default:
		return ErrClosed
	}
}

// ShardStats reports store-wide counters.
func (s *Store) ShardStats(ctx context.Context) (chunkstore.ShardStoreStats, error) {
	if err := s.checkOpen(ctx); err != nil {
		return chunkstore.ShardStoreStats{}, err
	}
	return s.Stats(), nil
}

// Stats reports store-wide counters.
func (s *Store) Stats() chunkstore.ShardStoreStats {
	st := chunkstore.ShardStoreStats{
		Shards:     s.shards.Load(),
		Bytes:      s.dataBytes.Load(),
		Corrupt:    s.corrupt.Load(),
		Compacted:  s.compacted.Load(),
		WriteBytes: s.written.Load(),
		ReadBytes:  s.read.Load(),
	}
	s.mu.RLock()
	for _, seg := range s.segs {
		size := seg.size.Load()
		st.DiskBytes += size
		st.DeadBytes += max(0, size-segHeaderLen-seg.live.Load())
		st.Segments++
	}
	s.mu.RUnlock()
	return st
}

// Location says where a shard's record lies on disk.
type Location struct {
	File       string // segment file path
	Offset     int64  // offset of the record header
	DataOffset int64  // offset of the shard data
	Size       int64  // data length
}

// Where reports where a shard is stored, for diagnostics and fault-injection
// tests.
func (s *Store) Where(k chunkstore.ShardKey) (Location, error) {
	l, err := s.lookup(k)
	if err != nil {
		return Location{}, err
	}
	return Location{
		File:       s.fs.PathJoin(s.segDir, segName(l.seg)),
		Offset:     l.off,
		DataOffset: l.off + recHeaderLen,
		Size:       int64(l.size),
	}, nil
}

// SetMeta durably stores a small named value (checkpoints of the healer and
// scrubber live here).
func (s *Store) SetMeta(name string, value []byte) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	opt := pebble.Sync
	if s.cfg.NoSync {
		opt = pebble.NoSync
	}
	if err := s.db.Set(append([]byte{metaPrefix}, name...), value, opt); err != nil {
		return fmt.Errorf("%w: set meta %q: %v", ErrIO, name, err)
	}
	return nil
}

// GetMeta returns a value stored with SetMeta, or ErrNotFound.
func (s *Store) GetMeta(name string) ([]byte, error) {
	select {
	case <-s.closing:
		return nil, ErrClosed
	default:
	}
	v, closer, err := s.db.Get(append([]byte{metaPrefix}, name...))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: meta %q", chunkstore.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: get meta %q: %v", ErrIO, name, err)
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// DeleteMeta removes a value stored with SetMeta.
func (s *Store) DeleteMeta(name string) error {
	if err := s.db.Delete(append([]byte{metaPrefix}, name...), pebble.Sync); err != nil {
		return fmt.Errorf("%w: delete meta %q: %v", ErrIO, name, err)
	}
	return nil
}

// Chunks returns the whole-chunk Store view of s (each chunk stored as its
// own 1+0 shard).
func (s *Store) Chunks() chunkstore.Store { return chunkstore.WholeChunks(s) }

// segmentIDs returns the ids of the open segments, ascending.
func (s *Store) segmentIDs() []uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]uint32, 0, len(s.segs))
	for id := range s.segs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

var _ chunkstore.ShardStore = (*Store)(nil)
var _ chunkstore.ShardStatser = (*Store)(nil)
