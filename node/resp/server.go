package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/internal/slogx"
)

// Handler serves one command. args[0] is the command name as sent. The
// handler writes exactly one reply to c.W.
type Handler func(ctx context.Context, c *Conn, args [][]byte)

// Config configures a Server.
type Config struct {
	// Auth checks the password of AUTH; nil refuses every AUTH (and so
	// every command but PING/QUIT/HELLO).
	Auth func(token string) bool
	// Handlers serve commands beyond the connection commands, keyed by
	// upper-case name.
	Handlers map[string]Handler
	// IdleTimeout closes connections silent this long (0: never).
	IdleTimeout time.Duration
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Server serves RESP connections.
type Server struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	cmds   *prometheus.CounterVec
	nconns prometheus.Gauge
}

// New returns a server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "resp"), conns: map[net.Conn]struct{}{}}
	s.cmds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_resp_commands_total",
		Help: "RESP commands served, by command and result."}, []string{"command", "result"})
	s.nconns = prometheus.NewGauge(prometheus.GaugeOpts{Name: "zos_resp_connections", Help: "Open RESP connections."})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.cmds, s.nconns)
	}
	return s
}

// Serve accepts connections until Close or ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.ln = ln
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(ctx, nc)
	}
}

// Close stops accepting, closes every connection and waits for handlers.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		if s.ln != nil {
			s.ln.Close()
		}
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Conn is one client connection.
type Conn struct {
	W      *Writer
	r      *bufio.Reader
	Authed bool
	// User is the name the client authenticated as ("default" for a
	// password-only AUTH).
	User string
	nc   net.Conn
}

// WatchDisconnect returns a context that ends when the client hangs up
// (or ctx ends), for handlers that block. Until stop is called the
// connection's reader belongs to the watcher; stop returns it, keeping any
// bytes the client pipelined meanwhile. The watcher starts only after
// watchDelay, so pops answered at once cost nothing.
func (c *Conn) WatchDisconnect(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if c.r == nil || c.r.Buffered() > 0 {
		// No reader, or more commands are already here: the client is alive.
		return ctx, cancel
	}
	var mu sync.Mutex
	var done chan struct{}
	stopped := false
	t := time.AfterFunc(watchDelay, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		done = make(chan struct{})
		go func() {
			defer close(done)
			if _, err := c.r.Peek(1); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					cancel() // EOF or reset: the client is gone
				}
			}
		}()
	})
	return ctx, func() {
		t.Stop()
		mu.Lock()
		stopped = true
		d := done
		mu.Unlock()
		if d != nil {
			select {
			case <-d:
			default:
				c.nc.SetReadDeadline(time.Now()) // unblock the peek
				<-d
				c.nc.SetReadDeadline(time.Time{})
			}
		}
		cancel()
	}
}

// watchDelay: blocking commands watch for a hang-up after this long.
const watchDelay = 20 * time.Millisecond

// RemoteAddr returns the client's address.
func (c *Conn) RemoteAddr() string { return c.nc.RemoteAddr().String() }

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
		s.nconns.Dec()
		s.wg.Done()
	}()
	s.nconns.Inc()
	r := bufio.NewReaderSize(nc, 16<<10)
	c := &Conn{W: NewWriter(bufio.NewWriterSize(nc, 16<<10)), nc: nc, r: r}
	for {
		if s.cfg.IdleTimeout > 0 {
			nc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		}
		args, err := ReadCommand(r)
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				c.W.Error("ERR Protocol error: " + strings.TrimPrefix(err.Error(), ErrProtocol.Error()+": "))
				c.W.Flush()
				s.cmds.WithLabelValues("_protocol", "error").Inc()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("connection ended", "remote", nc.RemoteAddr(), "err", err)
			}
			return
		}
		if len(args) == 0 {
			continue
		}
		quit := s.dispatch(ctx, c, args)
		// Flush when the client has nothing more pipelined.
		if r.Buffered() == 0 || quit {
			if err := c.W.Flush(); err != nil || quit {
				return
			}
		}
	}
}

func (s *Server) dispatch(ctx context.Context, c *Conn, args [][]byte) (quit bool) {
	name := strings.ToUpper(string(args[0]))
	result := "ok"
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("command handler panicked", "command", name, "panic", r)
			c.W.Error("ERR internal error")
			result = "error"
		}
		s.cmds.WithLabelValues(metricName(name, s.cfg.Handlers), result).Inc()
	}()
	switch name {
	case "QUIT":
		c.W.Simple("OK")
		return true
	case "PING":
		switch len(args) {
		case 1:
			c.W.Simple("PONG")
		case 2:
			c.W.Bulk(args[1])
		default:
			c.W.Error("ERR wrong number of arguments for 'ping' command")
		}
		return false
	case "AUTH":
		var pass string
		switch len(args) {
		case 2:
			c.User, pass = "default", string(args[1])
		case 3:
			c.User, pass = string(args[1]), string(args[2])
		default:
			c.W.Error("ERR wrong number of arguments for 'auth' command")
			return false
		}
		if s.cfg.Auth != nil && s.cfg.Auth(pass) {
			c.Authed = true
			c.W.Simple("OK")
		} else {
			c.Authed = false
			result = "denied"
			c.W.Error("WRONGPASS invalid username-password pair or user is disabled.")
		}
		return false
	case "HELLO":
		if len(args) >= 2 && string(args[1]) != "2" {
			c.W.Error("NOPROTO unsupported protocol version")
			return false
		}
		for i := 2; i < len(args); i++ {
			switch strings.ToUpper(string(args[i])) {
			case "AUTH":
				if i+2 >= len(args) {
					c.W.Error("ERR Syntax error in HELLO option 'auth'")
					return false
				}
				if s.cfg.Auth == nil || !s.cfg.Auth(string(args[i+2])) {
					result = "denied"
					c.W.Error("WRONGPASS invalid username-password pair or user is disabled.")
					return false
				}
				c.Authed, c.User = true, string(args[i+1])
				i += 2
			case "SETNAME":
				i++
			default:
				c.W.Error("ERR Syntax error in HELLO option '" + printable(args[i]) + "'")
				return false
			}
		}
		c.W.Array(6)
		c.W.Bulk([]byte("server"))
		c.W.Bulk([]byte("zos"))
		c.W.Bulk([]byte("proto"))
		c.W.Int(2)
		c.W.Bulk([]byte("mode"))
		c.W.Bulk([]byte("standalone"))
		return false
	}
	if !c.Authed {
		result = "denied"
		c.W.Error("NOAUTH Authentication required.")
		return false
	}
	switch name {
	case "ECHO":
		if len(args) != 2 {
			c.W.Error("ERR wrong number of arguments for 'echo' command")
			return false
		}
		c.W.Bulk(args[1])
	case "SELECT":
		if n, err := strconv.Atoi(string(argOr(args, 1))); err != nil || n != 0 || len(args) != 2 {
			c.W.Error("ERR DB index is out of range")
			return false
		}
		c.W.Simple("OK")
	case "CLIENT":
		// go-redis announces itself with CLIENT SETINFO; accept it.
		c.W.Simple("OK")
	case "COMMAND":
		c.W.Array(0)
	default:
		h := s.cfg.Handlers[name]
		if h == nil {
			result = "unknown"
			c.W.Error(fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", printable(args[0]), argPreview(args[1:])))
			return false
		}
		h(ctx, c, args)
	}
	return false
}

func argOr(args [][]byte, i int) []byte {
	if i < len(args) {
		return args[i]
	}
	return nil
}

func argPreview(args [][]byte) string {
	var b strings.Builder
	for i, a := range args {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "'%s' ", printable(a))
	}
	return b.String()
}

// metricName keeps the label set bounded: unknown commands share a label.
func metricName(name string, handlers map[string]Handler) string {
	switch name {
	case "QUIT", "PING", "AUTH", "HELLO", "ECHO", "SELECT", "CLIENT", "COMMAND":
		return name
	}
	if _, ok := handlers[name]; ok {
		return name
	}
	return "_unknown"
}
