package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/zosproject/zos/chunkstore"
)

func (s *Store) compactLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.CompactInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Compact(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("compaction failed", "err", err)
			}
		}
	}
}

// Compact rewrites the live records of every sealed segment whose dead
// fraction is at least Config.CompactRatio into the active segment and
// deletes the old file. It returns the bytes reclaimed. Safe to call
// concurrently with everything; one compaction runs at a time.
func (s *Store) Compact(ctx context.Context) (int64, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return 0, err
	}
	var reclaimed int64
	for _, id := range s.segmentIDs() {
		seg := s.acquire(id)
		if seg == nil {
			continue
		}
		active := s.isActive(seg)
		size, live := seg.size.Load(), seg.live.Load()
		dead := size - segHeaderLen - live
		// A segment sealed by a group still committing may hold records
		// not yet counted live (or indexed): not before it settles.
		if active || id >= s.settled.Load() || size <= segHeaderLen || float64(dead) < s.cfg.CompactRatio*float64(size-segHeaderLen) {
			s.release(seg)
			continue
		}
		err := s.compactSegment(ctx, seg)
		s.release(seg)
		if err != nil {
			return reclaimed, err
		}
		if seg.live.Load() == 0 {
			s.retire(seg)
			reclaimed += size
			s.compacted.Add(size)
			s.metrics.compacted.Add(float64(size))
			s.log.Debug("compacted segment", "segment", id, "bytes", size, "moved", live)
		}
	}
	return reclaimed, nil
}

func (s *Store) isActive(seg *segment) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.active == seg
}

// compactSegment moves every live record of seg to the active segment.
func (s *Store) compactSegment(ctx context.Context, seg *segment) error {
	const batchBytes = 8 << 20
	var batch []reloc
	var batchSize int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		o := &op{kind: opRelocate, relocs: batch, bytes: int64(batchSize), done: make(chan struct{})}
		batch, batchSize = nil, 0
		return s.submit(ctx, o)
	}
	err := s.liveRecords(ctx, seg, func(k chunkstore.ShardKey, l loc) error {
		rec := make([]byte, l.recordLen())
		n, err := seg.f.ReadAt(rec, l.off)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(rec)) {
			if errors.Is(err, io.EOF) {
				_ = s.quarantine(k, l, fmt.Errorf("%w: shard %s truncated in segment %d", chunkstore.ErrCorrupt, k, l.seg))
				return nil
			}
			return fmt.Errorf("%w: compact segment %d: %v", ErrIO, seg.id, err)
		}
		si, err := parseRecordHeader(rec)
		if err == nil && (si.Key != k || si.Sum != l.sum || si.Size != l.size) {
			err = fmt.Errorf("%w: record header does not match the index", chunkstore.ErrCorrupt)
		}
		if err == nil && chunkstore.ShardSum(rec[recHeaderLen:]) != l.sum {
			err = fmt.Errorf("%w: checksum mismatch", chunkstore.ErrCorrupt)
		}
		if err != nil {
			_ = s.quarantine(k, l, fmt.Errorf("shard %s in segment %d being compacted: %w", k, seg.id, err))
			return nil
		}
		batch = append(batch, reloc{key: k, from: l, record: rec})
		batchSize += len(rec)
		if batchSize >= batchBytes {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// liveRecords calls fn for every index entry pointing into seg. It scans
// the segment's record headers and checks each against the index; if a
// header is unreadable it falls back to a scan of the whole index.
func (s *Store) liveRecords(ctx context.Context, seg *segment, fn func(chunkstore.ShardKey, loc) error) error {
	size := seg.size.Load()
	hdr := make([]byte, recHeaderLen)
	off := int64(segHeaderLen)
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := seg.f.ReadAt(hdr, off); err != nil {
			break
		}
		si, err := parseRecordHeader(hdr)
		if err != nil {
			break
		}
		l, lerr := s.lookup(si.Key)
		if lerr == nil && l.seg == seg.id && l.off == off {
			if err := fn(si.Key, l); err != nil {
				return err
			}
		} else if lerr != nil && !errors.Is(lerr, chunkstore.ErrNotFound) {
			return lerr
		}
		off += recHeaderLen + int64(si.Size)
	}
	if off >= size {
		return nil
	}
	s.log.Warn("unreadable record header during compaction; scanning the index", "segment", seg.id, "offset", off)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{indexPrefix}, UpperBound: []byte{indexPrefix + 1}})
	if err != nil {
		return fmt.Errorf("%w: index: %v", ErrIO, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		l, err := decodeLoc(it.Value())
		if err != nil {
			return err
		}
		if l.seg != seg.id || l.off < off {
			continue
		}
		k, err := keyFromIndex(it.Key())
		if err != nil {
			return err
		}
		if err := fn(k, l); err != nil {
			return err
		}
	}
	return nil
}
