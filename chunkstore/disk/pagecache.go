package disk

import "github.com/cockroachdb/pebble/v2/vfs"

// pageWindow is the writer's record of the synced segment ranges it has
// left in the kernel's page cache, oldest first, and their total. The
// kernel would keep every written page until memory runs out; the store
// keeps the newest PageCacheBytes of them and drops the rest as it writes,
// so that the pages it writes into are ones it freed moments ago (doc.go,
// "Page cache").
type pageWindow struct {
	ranges []pageRange
	bytes  int64
}

type pageRange struct {
	seg      uint32
	from, to int64
}

// synced records that seg is synced up to its end and drops the oldest
// ranges past the window. Writer-only.
func (s *Store) synced(seg *segment) {
	end := seg.size.Load()
	if s.cfg.PageCacheBytes < 0 || end <= seg.synced {
		seg.synced = max(seg.synced, end)
		return
	}
	w := &s.pages
	if n := len(w.ranges); n > 0 && w.ranges[n-1].seg == seg.id && w.ranges[n-1].to == seg.synced {
		w.ranges[n-1].to = end
	} else {
		w.ranges = append(w.ranges, pageRange{seg: seg.id, from: seg.synced, to: end})
	}
	w.bytes += end - seg.synced
	seg.synced = end
	for w.bytes > s.cfg.PageCacheBytes && len(w.ranges) > 0 {
		r := &w.ranges[0]
		n := min(r.to-r.from, w.bytes-s.cfg.PageCacheBytes)
		s.dropRange(r.seg, r.from, r.from+n)
		r.from += n
		w.bytes -= n
		if r.from == r.to {
			w.ranges = w.ranges[1:]
		}
	}
	if len(w.ranges) == 0 {
		w.ranges = nil // let the backing array go
	}
}

// dropRange asks the kernel to drop the cached pages of segment id's
// [from, to), from the page holding from, unless the segment is gone.
func (s *Store) dropRange(id uint32, from, to int64) {
	seg := s.acquire(id)
	if seg == nil {
		return
	}
	defer s.release(seg)
	if fd := seg.f.Fd(); fd != vfs.InvalidFd {
		from &^= pageSize - 1
		dropPages(fd, from, to-from)
	}
}
