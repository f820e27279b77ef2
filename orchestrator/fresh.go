package orchestrator

import (
	"context"
	"sync"
	"time"

	"github.com/zosproject/zos/raft/fsm"
)

// syncer brings the local replica up to date with the cluster before a
// token is looked up: sync returns once a linearizable read that started
// after the call has completed, so the local state holds every command
// committed before it (a token deleted anywhere is gone here). Calls that
// arrive while a read is in flight share the next one, so there is at
// most one read in flight per node however many requests come in.
type syncer struct {
	read func(ctx context.Context, fn func(*fsm.State) error) error
	// timeout bounds one read; waiters give up earlier with their own
	// context.
	timeout time.Duration

	mu      sync.Mutex
	next    *round // the round new callers join; not started yet
	running bool   // a goroutine is running rounds
}

type round struct {
	done chan struct{}
	err  error
}

func (s *syncer) sync(ctx context.Context) error {
	s.mu.Lock()
	if s.next == nil {
		s.next = &round{done: make(chan struct{})}
	}
	r := s.next
	if !s.running {
		s.running = true
		go s.run()
	}
	s.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run runs rounds until none is waiting. A round is taken out of s.next
// before its read starts, so every caller that joined it arrived before
// the read began.
func (s *syncer) run() {
	for {
		s.mu.Lock()
		r := s.next
		s.next = nil
		if r == nil {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		r.err = s.read(ctx, func(*fsm.State) error { return nil })
		cancel()
		close(r.done)
	}
}
