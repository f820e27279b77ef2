package slogx

import (
	"slices"
	"sync"
	"time"
)

// Rare keeps a recurring warning to one log line per Every: Note records
// each occurrence with the names it involves (nodes, say) and says when to
// log, with how many occurrences and which names since the last line. The
// zero value logs every occurrence. Safe for concurrent use.
type Rare struct {
	Every time.Duration

	mu    sync.Mutex
	next  time.Time
	count int
	names []string
}

// Note records one occurrence. When a line is due (the first occurrence,
// then at most once per Every) it returns true with the occurrences and
// the sorted, distinct names since the last line, and starts counting
// again; the caller logs them.
func (r *Rare) Note(names ...string) (count int, all []string, log bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	for _, n := range names {
		if !slices.Contains(r.names, n) {
			r.names = append(r.names, n)
		}
	}
	now := time.Now()
	if now.Before(r.next) {
		return 0, nil, false
	}
	count, all = r.count, r.names
	r.count, r.names, r.next = 0, nil, now.Add(r.Every)
	slices.Sort(all)
	return count, all, true
}
