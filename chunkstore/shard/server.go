// Package shard is the shard server every node runs (port 9900 in
// production): it serves a chunkstore.ShardStore (the node's disk store) to
// the other nodes over TCP with the binary protocol of
// chunkstore/internal/wire, and, when Config.Journal is set, the node's
// write journals (a journal.Log, normally a journal.Dir). Clients are in
// chunkstore/remote.
//
// # Guarantees
//
//   - Every connection must prove knowledge of the cluster secret before
//     anything else (HMAC challenge-response both ways); a failed handshake
//     or a peer speaking anything but the protocol gets its connection
//     closed, and the server carries on.
//   - Many requests are served concurrently per connection (pipelining,
//     Config.MaxInFlight), answered in completion order; Get answers stream
//     one frame per shard as they are read, so memory per request is bounded
//     by the shard size, not the batch.
//   - Timeouts everywhere: the handshake, each frame once begun, idle
//     connections, each response write and each request's work have
//     deadlines, so a peer that stalls mid-stream costs a goroutine for at
//     most a deadline, never forever.
//   - Shards are verified by the store on put (checksum) and on get; the
//     server never sends bytes that failed verification.
//   - Requests are read into pooled buffers, recycled when their handler
//     returns; responses go out with one vectored write (no copy). A
//     journal append's payloads alias the request's buffer: the journal
//     must not keep them after Append returns (journal.Dir does not).
//   - Journal requests (append, read, trim) to a server without a journal
//     are answered with an error saying so; journal.ErrFenced,
//     ErrInvalid, ErrFull and ErrSyncFailed reach the client as themselves.
//
// # Usage
//
//	srv, err := shard.Start(shard.Config{Addr: ":9900", Secret: secret, Store: diskStore, Journal: journalDir, Registry: reg})
//	defer srv.Close()
package shard

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/internal/wire"
	"github.com/zosproject/zos/chunkstore/journal"
)

// DefaultPort is the shard server's port (0-db's).
const DefaultPort = 9900

// Config configures a Server.
type Config struct {
	// Addr to listen on, e.g. ":9900" or "127.0.0.3:0". Default ":9900".
	Addr string
	// Secret is the cluster secret every peer must prove (at least 16
	// bytes). Required.
	Secret []byte
	// Store serves the shards. Required.
	Store chunkstore.ShardStore
	// Journal, if set, serves the node's write journals (journal
	// requests to a server without one fail).
	Journal journal.Log
	// TLS, when set, wraps every connection in TLS before the secret
	// handshake; it should require and verify client certificates (mutual
	// TLS). A peer refused there is logged and never sends a frame.
	TLS *tls.Config
	// HandshakeTimeout bounds the handshake (TLS and secret). Default 10s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection with no request for this long.
	// Default 5m.
	IdleTimeout time.Duration
	// FrameTimeout bounds reading one frame once its first byte arrived,
	// and writing one response frame. Default 30s.
	FrameTimeout time.Duration
	// RequestTimeout bounds the store work of one request. Default 60s.
	RequestTimeout time.Duration
	// MaxInFlight is the number of requests served concurrently per
	// connection; more wait (TCP backpressure). Default 32.
	MaxInFlight int
	// MaxConns caps concurrent connections; more are closed at accept.
	// Default 4096.
	MaxConns int
	// Logger (component "shard-server"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the server's metrics.
	Registry *prometheus.Registry
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("shard: bad config")

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = fmt.Sprintf(":%d", DefaultPort)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = 30 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = time.Minute
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 32
	}
	if c.MaxConns == 0 {
		c.MaxConns = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case len(c.Secret) < 16:
		return fmt.Errorf("%w: Secret must be at least 16 bytes", ErrConfig)
	case c.Store == nil:
		return fmt.Errorf("%w: Store is required", ErrConfig)
	case c.MaxInFlight < 1 || c.MaxConns < 1:
		return fmt.Errorf("%w: MaxInFlight and MaxConns must be positive", ErrConfig)
	}
	return nil
}

// Server is a running shard server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ln     net.Listener
	m      *metrics
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on cfg.Addr and serves in the background until Close.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("shard: listen %s: %w", cfg.Addr, err)
	}
	return Serve(ln, cfg)
}

// Serve serves on ln (which Close will close) in the background.
func Serve(ln net.Listener, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		ln.Close()
		return nil, err
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "shard-server", "addr", ln.Addr().String()),
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  map[net.Conn]struct{}{},
	}
	s.m = newMetrics(cfg.Registry)
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, closes every connection, and waits for every
// handler to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.m.unregister()
	return err
}

func (s *Server) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			// Temporary trouble (out of file descriptors...): back off.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept", "err", err)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.m.refused.Inc()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.m.conns.Inc()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				s.m.conns.Dec()
				c.Close()
			}()
			s.serveConn(c)
		})
	}
}

// conn is one authenticated connection.
type conn struct {
	s    *Server
	c    net.Conn
	cork *wire.CorkConn // under c's TLS, or nil
	log  *slog.Logger
	wmu  sync.Mutex
	werr error
}

func (s *Server) serveConn(c net.Conn) {
	log := s.log.With("peer", c.RemoteAddr().String())
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var cork *wire.CorkConn
	if s.cfg.TLS != nil {
		cork = wire.NewCorkConn(c)
		tc := tls.Server(cork, s.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			s.m.badPeers.WithLabelValues("tls").Inc()
			log.Warn("TLS handshake refused: peer has no valid node certificate of this cluster", "err", err)
			return
		}
		c = tc
	}
	if err := wire.ServerHandshake(c, s.cfg.Secret); err != nil {
		s.m.badPeers.WithLabelValues("handshake").Inc()
		log.Warn("handshake failed; closing", "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	cn := &conn{s: s, c: c, cork: cork, log: log}
	br := bufio.NewReaderSize(c, 64<<10) // large frames are read past it, not through it
	sem := make(chan struct{}, s.cfg.MaxInFlight)
	var handlers sync.WaitGroup
	defer handlers.Wait()
	for {
		// Idle wait for the next frame, then a deadline for the rest of it.
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if _, err := br.Peek(1); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("connection ended", "err", err)
			}
			return
		}
		c.SetReadDeadline(time.Now().Add(s.cfg.FrameTimeout))
		// A pooled buffer per frame: its handler releases it when done
		// (stores do not keep shard data after PutShards returns).
		f, release, err := wire.ReadFramePooled(br)
		if err != nil {
			s.m.badPeers.WithLabelValues("frame").Inc()
			log.Warn("bad or stalled frame; closing", "err", err)
			return
		}
		if !wire.IsRequest(f.Type) {
			release()
			if wire.IsRequestSpace(f.Type) {
				// A request of a newer protocol: refuse it alone, so a
				// newer client falls back instead of losing the
				// connection and every call on it.
				s.m.requests.WithLabelValues("unknown").Inc()
				cn.fail(f.ID, fmt.Errorf("%w: unknown request type %#x", wire.ErrProtocol, f.Type))
				continue
			}
			s.m.badPeers.WithLabelValues("type").Inc()
			log.Warn("not a request; closing", "type", f.Type)
			return
		}
		s.m.bytesIn.Add(float64(len(f.Payload) + 9))
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			release()
			return
		}
		handlers.Go(func() {
			defer func() { <-sem }()
			defer release()
			if err := cn.handle(f); err != nil {
				// A malformed request: the peer is not speaking the
				// protocol; drop it.
				s.m.badPeers.WithLabelValues("payload").Inc()
				log.Warn("malformed request; closing", "type", f.Type, "err", err)
				c.Close()
			}
		})
	}
}

// write sends one response frame; a write error closes the connection.
func (cn *conn) write(typ byte, id uint32, parts ...[]byte) {
	cn.writeFrames(typ, id, [][][]byte{parts})
}

// writeFrames sends response frames of one type and id (the parts of
// each), corked together under TLS; a write error closes the connection.
func (cn *conn) writeFrames(typ byte, id uint32, frames [][][]byte) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if cn.werr != nil {
		return
	}
	cn.c.SetWriteDeadline(time.Now().Add(cn.s.cfg.FrameTimeout))
	if cn.cork != nil {
		cn.cork.Cork()
	}
	var err error
	n := 0
	for _, parts := range frames {
		if err = wire.WriteFrameTo(cn.c, typ, id, parts...); err != nil {
			break
		}
		n += 9
		for _, p := range parts {
			n += len(p)
		}
	}
	if cn.cork != nil {
		if uerr := cn.cork.Uncork(); err == nil {
			err = uerr
		}
	}
	if err != nil {
		cn.werr = err
		cn.log.Debug("write failed; closing", "err", err)
		cn.c.Close()
		return
	}
	cn.s.m.bytesOut.Add(float64(n))
}

func (cn *conn) fail(id uint32, err error) {
	cn.write(wire.TypeError, id, wire.AppendError(nil, err))
}

// handle serves one request. It returns an error only for a malformed
// request (the connection is then closed); store errors are answered.
func (cn *conn) handle(f wire.Frame) error {
	s := cn.s
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	defer cancel()
	name := typeName(f.Type)
	defer func() { s.m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds()) }()
	s.m.requests.WithLabelValues(name).Inc()
	switch f.Type {
	case wire.TypePing:
		cn.write(wire.TypeOK, f.ID)
	case wire.TypePut:
		shards, err := wire.DecodePut(f.Payload)
		if err != nil {
			return err
		}
		if err := s.cfg.Store.PutShards(ctx, shards); err != nil {
			s.m.errors.WithLabelValues(name).Inc()
			cn.fail(f.ID, err)
			return nil
		}
		cn.write(wire.TypeOK, f.ID)
	case wire.TypeGet:
		keys, err := wire.DecodeKeys(f.Payload)
		if err != nil {
			return err
		}
		cn.stream(f.ID, name, len(keys), wire.TypeGetItem,
			func(i, j int) ([]chunkstore.ShardResult, error) { return s.cfg.Store.GetShards(ctx, keys[i:j]) },
			func(i int, r chunkstore.ShardResult) []byte { return wire.GetItemHeader(nil, i, r.Shard, r.Err) })
	case wire.TypeGetRng:
		rs, err := wire.DecodeRanges(f.Payload)
		if err != nil {
			return err
		}
		cn.stream(f.ID, name, len(rs), wire.TypeRngItem,
			func(i, j int) ([]chunkstore.ShardResult, error) {
				return chunkstore.GetShardRanges(ctx, s.cfg.Store, rs[i:j])
			},
			func(i int, r chunkstore.ShardResult) []byte {
				return wire.RangeItemHeader(nil, i, r.Shard, rs[i].Off, r.Err)
			})
	case wire.TypeStat:
		keys, err := wire.DecodeKeys(f.Payload)
		if err != nil {
			return err
		}
		res, err := s.cfg.Store.StatShards(ctx, keys)
		if err != nil {
			s.m.errors.WithLabelValues(name).Inc()
			cn.fail(f.ID, err)
			return nil
		}
		cn.write(wire.TypeStatRes, f.ID, wire.AppendStatResults(nil, res))
	case wire.TypeDelete:
		keys, before, err := wire.DecodeDelete(f.Payload)
		if err != nil {
			return err
		}
		n, err := s.cfg.Store.DeleteShards(ctx, keys, before)
		if err != nil {
			s.m.errors.WithLabelValues(name).Inc()
			cn.fail(f.ID, err)
			return nil
		}
		cn.write(wire.TypeDelRes, f.ID, wire.AppendU32(nil, n))
	case wire.TypeEnum:
		after, limit, err := wire.DecodeEnum(f.Payload)
		if err != nil {
			return err
		}
		infos, err := s.cfg.Store.EnumerateShards(ctx, after, limit)
		if err != nil {
			s.m.errors.WithLabelValues(name).Inc()
			cn.fail(f.ID, err)
			return nil
		}
		cn.write(wire.TypeEnumRes, f.ID, wire.AppendInfos(nil, infos))
	case wire.TypeStats:
		st, ok := s.cfg.Store.(chunkstore.ShardStatser)
		if !ok {
			cn.fail(f.ID, fmt.Errorf("%w: this store keeps no statistics", chunkstore.ErrNotFound))
			return nil
		}
		stats, err := st.ShardStats(ctx)
		if err != nil {
			cn.fail(f.ID, err)
			return nil
		}
		cn.write(wire.TypeStatsRs, f.ID, wire.AppendStats(nil, stats))
	case wire.TypeJAppend, wire.TypeJRead, wire.TypeJTrim:
		return cn.handleJournal(ctx, f, name)
	}
	return nil
}

// stream answers a request for n items with one frame of type typ per
// item, reading a few at a time (read(i, j) returns items i..j-1) and
// sending those together as soon as they are read; head encodes an item's frame head, its
// data following as its own part. A failed read answers the whole
// request with an Error frame (items already sent are dropped by the
// client with the call).
func (cn *conn) stream(id uint32, name string, n int, typ byte, read func(i, j int) ([]chunkstore.ShardResult, error), head func(i int, r chunkstore.ShardResult) []byte) {
	const step = 4
	for i := 0; i < n; i += step {
		j := min(i+step, n)
		res, err := read(i, j)
		if err == nil && len(res) != j-i {
			err = fmt.Errorf("store returned %d results for %d items", len(res), j-i)
		}
		if err != nil {
			chunkstore.ReleaseResults(res)
			cn.s.m.errors.WithLabelValues(name).Inc()
			cn.fail(id, err)
			return
		}
		// The step's items go out together (one write under TLS).
		frames := make([][][]byte, len(res))
		for k, r := range res {
			if r.Err != nil && !errors.Is(r.Err, chunkstore.ErrNotFound) {
				cn.s.m.errors.WithLabelValues(name).Inc()
			}
			frames[k] = [][]byte{head(i+k, r), r.Shard.Data}
		}
		cn.writeFrames(typ, id, frames)
		chunkstore.ReleaseResults(res) // written (synchronously): the store may reuse them
	}
}

// errNoJournal answers journal requests to a server without a journal.
var errNoJournal = errors.New("this node keeps no journal (its shard server has no Config.Journal)")

// handleJournal serves a journal request (as handle does).
func (cn *conn) handleJournal(ctx context.Context, f wire.Frame, name string) error {
	s := cn.s
	var err error
	switch f.Type {
	case wire.TypeJAppend:
		jname, epoch, recs, derr := wire.DecodeJAppend(f.Payload)
		if derr != nil {
			return derr
		}
		if err = s.checkJournal(); err == nil {
			// recs alias the frame's pooled buffer, released when the
			// handler returns: the journal does not keep them.
			err = s.cfg.Journal.Append(ctx, jname, epoch, recs)
		}
		if err == nil {
			cn.write(wire.TypeOK, f.ID)
		}
	case wire.TypeJRead:
		jname, seal, derr := wire.DecodeJRead(f.Payload)
		if derr != nil {
			return derr
		}
		var recs []journal.Record
		if err = s.checkJournal(); err == nil {
			recs, err = s.cfg.Journal.Read(ctx, jname, seal)
		}
		if err == nil {
			parts := wire.JRecordsParts(recs)
			if n := partsLen(parts); n > wire.MaxFrame-5 {
				err = fmt.Errorf("%w: journal %q: %d records of %d bytes exceed a frame", journal.ErrFull, jname, len(recs), n)
			} else {
				cn.write(wire.TypeJRecs, f.ID, parts...)
			}
		}
	case wire.TypeJTrim:
		jname, epoch, seq, derr := wire.DecodeJTrim(f.Payload)
		if derr != nil {
			return derr
		}
		if err = s.checkJournal(); err == nil {
			err = s.cfg.Journal.Trim(ctx, jname, epoch, seq)
		}
		if err == nil {
			cn.write(wire.TypeOK, f.ID)
		}
	}
	if err != nil {
		s.m.errors.WithLabelValues(name).Inc()
		cn.fail(f.ID, err)
	}
	return nil
}

func (s *Server) checkJournal() error {
	if s.cfg.Journal == nil {
		return errNoJournal
	}
	return nil
}

func partsLen(parts [][]byte) int {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	return n
}

func typeName(t byte) string {
	switch t {
	case wire.TypePut:
		return "put"
	case wire.TypeGet:
		return "get"
	case wire.TypeGetRng:
		return "get_range"
	case wire.TypeStat:
		return "stat"
	case wire.TypeDelete:
		return "delete"
	case wire.TypeEnum:
		return "enumerate"
	case wire.TypePing:
		return "ping"
	case wire.TypeStats:
		return "stats"
	case wire.TypeJAppend:
		return "jappend"
	case wire.TypeJRead:
		return "jread"
	case wire.TypeJTrim:
		return "jtrim"
	}
	return "other"
}

type metrics struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
	conns      prometheus.Gauge
	refused    prometheus.Counter
	badPeers   *prometheus.CounterVec
	requests   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	bytesIn    prometheus.Counter
	bytesOut   prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		reg:      reg,
		conns:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "zos_shard_server_connections", Help: "Open shard server connections."}),
		refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_shard_server_refused_total", Help: "Connections refused at accept (MaxConns)."}),
		badPeers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_shard_server_bad_peers_total", Help: "Connections closed for failing the handshake or the protocol."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_shard_server_requests_total", Help: "Requests served."}, []string{"op"}),
		errors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_shard_server_errors_total", Help: "Requests or items answered with an error."}, []string{"op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "zos_shard_server_request_seconds", Help: "Request service time.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12)}, []string{"op"}),
		bytesIn:  prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_shard_server_received_bytes_total", Help: "Request bytes received."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_shard_server_sent_bytes_total", Help: "Response bytes sent."}),
	}
	m.collectors = []prometheus.Collector{m.conns, m.refused, m.badPeers, m.requests, m.errors, m.latency, m.bytesIn, m.bytesOut}
	if reg != nil {
		for _, c := range m.collectors {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
