package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves Exports over NBD. Create it with New, run it with Serve on
// one or more listeners (or ServeConn on single connections), stop it with
// Shutdown (graceful) or Close (immediate).
type Server struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	baseCtx    context.Context // Export calls; cancelled by Close
	cancelBase context.CancelFunc

	shutting atomic.Bool

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// New returns a Server for cfg (defaults applied, then validated). It
// registers the server's metrics on cfg.Registerer.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if t.MinVersion == 0 {
			t.MinVersion = 0x0303 // TLS 1.2, as the NBD spec requires
		}
		cfg.TLS = t
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "nbd"),
		m:          newMetrics(cfg.Registerer),
		baseCtx:    ctx,
		cancelBase: cancel,
		listeners:  make(map[*net.Listener]struct{}),
		conns:      make(map[*conn]struct{}),
	}, nil
}

// Serve accepts connections on ln and serves each in its own goroutine
// until the server is shut down, ln fails, or ctx is cancelled. Cancelling
// ctx shuts the whole server down gracefully (bounded by
// Config.ShutdownTimeout, then forcibly) and Serve returns nil once every
// connection is closed. After Shutdown or Close, Serve returns
// ErrServerClosed. Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)

	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			s.log.Warn("graceful shutdown timed out; connections closed", "err", err)
		}
	})
	defer stop()

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				if ctx.Err() != nil {
					s.wg.Wait() // the shutdown ctx started
					return nil
				}
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Transient (e.g. too many open files surfaces as a
				// temporary accept error): back off and retry.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		delay = 0
		if !s.admit() {
			nc.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			s.serveConn(nc)
		}()
	}
}

// ServeConn serves one already-accepted connection (a TCP or unix socket, a
// net.Pipe end in tests) and returns when it is closed. It closes nc.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	if !s.admit() {
		nc.Close()
		return
	}
	defer s.wg.Done()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	s.serveConn(nc)
}

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutting.Load() {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

// admit counts a connection goroutine in s.wg unless the server is shutting
// down. Adding under s.mu after checking shutting guarantees no Add races
// with the Wait of Shutdown or Close.
func (s *Server) admit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutting.Load() {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

// beginShutdown stops accepting and interrupts every connection.
func (s *Server) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutting.Store(true)
	for ln := range s.listeners {
		(*ln).Close()
	}
	for c := range s.conns {
		c.interrupt()
	}
}

// Shutdown stops the server gracefully: listeners close, connections in
// negotiation are dropped, and every connection in transmission stops
// reading new requests, finishes the requests in flight (their replies are
// sent), flushes its export and closes. If ctx ends first, the remaining
// connections are closed at once (as by Close) and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginShutdown()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close stops the server at once: listeners and connections are closed and
// the context of Export calls in progress is cancelled. It waits for every
// connection goroutine (and so every Export call) to return.
func (s *Server) Close() error {
	s.beginShutdown()
	s.cancelBase()
	s.mu.Lock()
	for c := range s.conns {
		c.kill()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
