// Package remote is the client of a shard server (chunkstore/shard): a
// chunkstore.ShardStore whose shards live on another node, reached over a
// few keep-alive TCP connections with many requests in flight on each.
//
// # Guarantees
//
//   - Every shard returned has been verified against its checksum here, on
//     arrival (the server verified it on disk too), and matches the key
//     asked for; bytes that fail are reported as chunkstore.ErrCorrupt.
//   - No call hangs: a request that sees no answer frame for
//     Config.RequestTimeout fails with chunkstore.ErrUnavailable and its
//     connection is dropped (a stalled peer would block the others); dials
//     and handshakes have Config.DialTimeout. A cancelled context returns at
//     once.
//   - Frames are sent with one vectored write each (shard data is not
//     copied) and shards are received into pooled buffers: a caller done
//     with a GetShards result may recycle it with its Release.
//   - Transport failures wrap chunkstore.ErrUnavailable; a wrong cluster
//     secret is ErrAuth. All requests are idempotent, so a request whose
//     connection broke is retried once on a fresh one (a journal append
//     sent twice is read once: records are keyed by (Epoch, Seq)).
//   - A Client is also the journal.Log of the server's node: appends send
//     their payloads without copying them and do not keep them after
//     returning; journal.ErrFenced, ErrInvalid, ErrFull and ErrSyncFailed
//     come back as themselves.
//
// # Usage
//
//	c, err := remote.New(remote.Config{Addr: "10.0.0.5:9900", Secret: secret})
//	defer c.Close()
//	res, err := c.GetShards(ctx, keys)     // chunkstore.ShardStore
//	chunks := c.Chunks()                   // chunkstore.Store view (1+0 shards)
//	err = c.Append(ctx, "vdisk", epoch, recs) // journal.Log
//
// Pool caches one Client per address for the erasure store.
package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/internal/wire"
	"github.com/zosproject/zos/chunkstore/journal"
)

// ErrAuth: the server and this client do not share the cluster secret.
var ErrAuth = wire.ErrAuth

// ErrClosed: the client was closed.
var ErrClosed = errors.New("remote: client closed")

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("remote: bad config")

// Config configures a Client.
type Config struct {
	// Addr is the shard server's host:port. Required.
	Addr string
	// Secret is the cluster secret (at least 16 bytes). Required.
	Secret []byte
	// Conns is the number of connections kept to the server (requests are
	// spread over them; a large frame holds one while it is sent).
	// Default 4.
	Conns int
	// TLS, when set, runs every connection over TLS (the server's
	// certificate is verified as the config says; set a client
	// certificate for mutual TLS) before the secret handshake.
	TLS *tls.Config
	// DialTimeout bounds connecting and the handshake. Default 5s.
	DialTimeout time.Duration
	// RequestTimeout: a request that receives no frame for this long fails
	// and its connection is dropped. Default 30s.
	RequestTimeout time.Duration
	// Logger (component "shard-client"). Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Conns == 0 {
		c.Conns = 4
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Addr == "":
		return fmt.Errorf("%w: Addr is required", ErrConfig)
	case len(c.Secret) < 16:
		return fmt.Errorf("%w: Secret must be at least 16 bytes", ErrConfig)
	case c.Conns < 1:
		return fmt.Errorf("%w: Conns must be positive", ErrConfig)
	}
	return nil
}

// Client talks to one shard server. It is safe for concurrent use.
type Client struct {
	cfg  Config
	log  *slog.Logger
	next atomic.Uint32

	mu      sync.Mutex
	slots   []*slot
	closed  bool
	dialErr error     // last dial failure
	retryAt time.Time // no dial before this
	backoff time.Duration
}

type slot struct {
	mu sync.Mutex // serialises dialing
	cn *conn
}

// Dial backoff: after a failed dial or handshake, calls fail fast with that
// error until the backoff passes (doubling from minBackoff to maxBackoff),
// so a dead or hung server costs one timeout, not one per call. A refused
// connection (the host answers, nothing listens: a server restarting) costs
// nothing to try again, so it sets no backoff: the first call after the
// server is back reaches it. Otherwise a write would find a node that came
// back "unreachable" for seconds and be stored degraded (chunkstore/erasure
// write quorum) for no reason.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// New returns a client; connections are made on first use.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	c := &Client{cfg: cfg, log: cfg.Logger.With("component", "shard-client", "server", cfg.Addr)}
	for range cfg.Conns {
		c.slots = append(c.slots, &slot{})
	}
	return c, nil
}

// Addr is the server's address.
func (c *Client) Addr() string { return c.cfg.Addr }

// Close closes the connections; calls in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	for _, s := range c.slots {
		s.mu.Lock()
		if s.cn != nil {
			s.cn.kill(ErrClosed)
			<-s.cn.readerDone
		}
		s.mu.Unlock()
	}
	return nil
}

// Retry ends a dial backoff: the next call dials at once instead of
// failing with the last dial error. For a server known to be back (its
// node marked up again): without it, writes to it would fail fast, as if
// it were still dead, for up to maxBackoff.
func (c *Client) Retry() {
	c.mu.Lock()
	c.dialErr, c.retryAt, c.backoff = nil, time.Time{}, 0
	c.mu.Unlock()
}

func (c *Client) unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: shard server %s: %s", chunkstore.ErrUnavailable, c.cfg.Addr, fmt.Sprintf(format, args...))
}

func (c *Client) getConn(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	s := c.slots[int(c.next.Add(1))%len(c.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cn != nil && s.cn.alive() {
		return s.cn, nil
	}
	c.mu.Lock()
	if c.dialErr != nil && time.Now().Before(c.retryAt) {
		err := c.dialErr
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	cn, err := c.dial(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctxDone(ctx) == nil && !errors.Is(err, syscall.ECONNREFUSED) {
			c.backoff = min(max(2*c.backoff, minBackoff), maxBackoff)
			c.retryAt = time.Now().Add(c.backoff)
			c.dialErr = err
		}
		return nil, err
	}
	c.dialErr, c.backoff = nil, 0
	s.cn = cn
	return cn, nil
}

// ctxDone is ctx.Err(), and DeadlineExceeded once ctx's deadline has
// passed even if its timer has not fired yet: the connection's deadline
// (the same instant) may fire first, and a caller's deadline must not pass
// for the server's failure (and set a dial backoff other callers hit).
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *Client) dial(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", c.cfg.Addr)
	if err != nil {
		if err := ctxDone(ctx); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: shard server %s: dial: %w", chunkstore.ErrUnavailable, c.cfg.Addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	deadline, _ := dctx.Deadline()
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	var cork *wire.CorkConn
	if c.cfg.TLS != nil {
		cork = wire.NewCorkConn(nc)
		tc := tls.Client(cork, c.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			stop()
			nc.Close()
			if err := ctxDone(ctx); err != nil {
				return nil, err
			}
			c.log.Warn("TLS handshake with shard server failed", "addr", c.cfg.Addr, "err", err)
			return nil, c.unavailable("TLS handshake: %v", err)
		}
		nc = tc
	}
	err = wire.ClientHandshake(nc, c.cfg.Secret)
	stop()
	if err != nil {
		nc.Close()
		if err := ctxDone(ctx); err != nil {
			return nil, err
		}
		if errors.Is(err, wire.ErrAuth) {
			return nil, fmt.Errorf("shard server %s: %w", c.cfg.Addr, err)
		}
		return nil, c.unavailable("handshake: %v", err)
	}
	nc.SetDeadline(time.Time{})
	cn := &conn{
		client:     c,
		nc:         nc,
		cork:       cork,
		calls:      map[uint32]*call{},
		readerDone: make(chan struct{}),
	}
	go cn.readLoop()
	return cn, nil
}

// conn is one authenticated connection with a reader goroutine that
// dispatches answer frames to their calls.
type conn struct {
	client *Client
	nc     net.Conn
	cork   *wire.CorkConn // under nc's TLS, or nil
	wmu    sync.Mutex

	mu         sync.Mutex
	calls      map[uint32]*call
	nextID     uint32
	dead       error
	readerDone chan struct{}
}

// call is one request waiting for its answer.
type call struct {
	want  int  // item frames expected (Get, GetRng), else 0
	item  byte // their type
	got   int
	items []chunkstore.ShardResult
	offs  []uint32 // where each range item starts in its shard
	resp  wire.Frame
	err   error
	last  atomic.Int64 // unix nanos of the last frame for this call
	done  chan struct{}
}

// errConnLost marks failures where the connection broke (worth one retry).
var errConnLost = errors.New("connection lost")

func (cn *conn) alive() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.dead == nil
}

// kill closes the connection and fails every pending call with err.
func (cn *conn) kill(err error) {
	cn.mu.Lock()
	if cn.dead != nil {
		cn.mu.Unlock()
		return
	}
	cn.dead = err
	calls := cn.calls
	cn.calls = map[uint32]*call{}
	cn.mu.Unlock()
	cn.nc.Close()
	for _, cl := range calls {
		cl.err = err
		close(cl.done)
	}
}

func (cn *conn) readLoop() {
	defer close(cn.readerDone)
	br := bufio.NewReaderSize(cn.nc, 64<<10) // large frames are read past it, not through it
	c := cn.client
	for {
		// Pooled: a shard's buffer goes back with its result's Release.
		f, release, err := wire.ReadFramePooled(br)
		if err != nil {
			if errors.Is(err, wire.ErrProtocol) {
				c.log.Warn("server sent garbage; dropping the connection", "err", err)
				cn.kill(fmt.Errorf("%w: shard server %s: %v", chunkstore.ErrUnavailable, c.cfg.Addr, err))
			} else {
				cn.kill(fmt.Errorf("%w: shard server %s: %w: %v", chunkstore.ErrUnavailable, c.cfg.Addr, errConnLost, err))
			}
			return
		}
		// The call is updated under cn.mu so that kill and forget never
		// race with it.
		cn.mu.Lock()
		cl := cn.calls[f.ID]
		if cl == nil {
			cn.mu.Unlock()
			release()
			continue // answer to an abandoned call
		}
		cl.last.Store(time.Now().UnixNano())
		finished, perr := cl.accept(f, release)
		if finished && perr == nil {
			delete(cn.calls, f.ID)
			close(cl.done)
		}
		cn.mu.Unlock()
		if perr != nil {
			c.log.Warn("server sent a malformed answer; dropping the connection", "err", perr)
			cn.kill(fmt.Errorf("%w: shard server %s: %v", chunkstore.ErrUnavailable, c.cfg.Addr, perr))
			return
		}
	}
}

// accept takes one frame for the call; it reports whether the call is
// complete, or a protocol error. release recycles the frame's buffer: a
// shard received keeps it as its result's Release; other frames are
// decoded and released, or (answers decoded later) left to the GC.
func (cl *call) accept(f wire.Frame, release func()) (bool, error) {
	switch f.Type {
	case wire.TypeError:
		cl.err = wire.DecodeError(f.Payload)
		release()
		return true, nil
	case wire.TypeGetItem, wire.TypeRngItem:
		if f.Type != cl.item {
			release()
			return false, fmt.Errorf("%w: item frame of type %#x, want %#x", wire.ErrProtocol, f.Type, cl.item)
		}
		var idx int
		var res chunkstore.ShardResult
		var off uint32
		var err error
		if f.Type == wire.TypeGetItem {
			idx, res, err = wire.DecodeGetItem(f.Payload)
		} else {
			idx, res, off, err = wire.DecodeRangeItem(f.Payload)
		}
		if err != nil {
			release()
			return false, err
		}
		if idx < 0 || idx >= cl.want || cl.items[idx].Err != errPending {
			release()
			return false, fmt.Errorf("%w: unexpected get item %d", wire.ErrProtocol, idx)
		}
		if cl.offs != nil {
			cl.offs[idx] = off
		}
		if res.Err == nil {
			res.Release = release
		} else {
			release()
		}
		cl.items[idx] = res
		cl.got++
		return cl.got == cl.want, nil
	default:
		if cl.want > 0 {
			return false, fmt.Errorf("%w: frame type %#x in answer to a get", wire.ErrProtocol, f.Type)
		}
		cl.resp = f
		return true, nil
	}
}

var errPending = errors.New("no answer")

// roundTrip sends one request and waits for its answer.
func (cn *conn) roundTrip(ctx context.Context, typ byte, parts [][]byte, want int) (*call, error) {
	c := cn.client
	cl := &call{want: want, item: wire.TypeGetItem, done: make(chan struct{})}
	if typ == wire.TypeGetRng {
		cl.item, cl.offs = wire.TypeRngItem, make([]uint32, want)
	}
	if want > 0 {
		cl.items = make([]chunkstore.ShardResult, want)
		for i := range cl.items {
			cl.items[i].Err = errPending
		}
	}
	cn.mu.Lock()
	if cn.dead != nil {
		err := cn.dead
		cn.mu.Unlock()
		return nil, err
	}
	cn.nextID++
	id := cn.nextID
	cn.calls[id] = cl
	cn.mu.Unlock()
	cl.last.Store(time.Now().UnixNano())

	cn.wmu.Lock()
	cn.nc.SetWriteDeadline(time.Now().Add(c.cfg.RequestTimeout))
	err := wire.WriteFrameCorked(cn.nc, cn.cork, typ, id, parts...)
	cn.wmu.Unlock()
	if err != nil {
		if errors.Is(err, chunkstore.ErrTooLarge) {
			cn.forget(id)
			return nil, err
		}
		err = fmt.Errorf("%w: shard server %s: %w: send: %v", chunkstore.ErrUnavailable, c.cfg.Addr, errConnLost, err)
		cn.kill(err)
		return nil, err
	}
	timer := time.NewTimer(c.cfg.RequestTimeout)
	defer timer.Stop()
	for {
		select {
		case <-cl.done:
			if cl.err != nil {
				return nil, cl.err
			}
			return cl, nil
		case <-ctx.Done():
			cn.forget(id)
			return nil, ctx.Err()
		case <-timer.C:
			idle := time.Since(time.Unix(0, cl.last.Load()))
			if idle < c.cfg.RequestTimeout {
				timer.Reset(c.cfg.RequestTimeout - idle)
				continue
			}
			err := c.unavailable("no answer for %v; dropping the connection", c.cfg.RequestTimeout)
			c.log.Warn("request timed out", "err", err)
			cn.kill(err)
			return nil, err
		}
	}
}

func (cn *conn) forget(id uint32) {
	cn.mu.Lock()
	delete(cn.calls, id)
	cn.mu.Unlock()
}

// do runs a request, retrying once on a fresh connection if the first one
// broke.
func (c *Client) do(ctx context.Context, typ byte, parts [][]byte, want int) (*call, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		cn, err := c.getConn(ctx)
		if err != nil {
			return nil, err
		}
		cl, err := cn.roundTrip(ctx, typ, parts, want)
		if err != nil && attempt == 0 && errors.Is(err, errConnLost) && ctx.Err() == nil {
			continue
		}
		return cl, err
	}
}

func expect(cl *call, typ byte) error {
	if cl.resp.Type != typ {
		return fmt.Errorf("%w: answer of type %#x, want %#x", wire.ErrProtocol, cl.resp.Type, typ)
	}
	return nil
}

// maxPutBatch caps the data of one Put frame.
const maxPutBatch = 32 << 20

// PutShards stores shards on the server (durable when it returns nil).
func (c *Client) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for len(shards) > 0 {
		n, size := 0, 0
		for n < len(shards) && n < wire.MaxItems && (n == 0 || size+len(shards[n].Data) <= maxPutBatch) {
			size += len(shards[n].Data)
			n++
		}
		cl, err := c.do(ctx, wire.TypePut, wire.PutParts(shards[:n]), 0)
		if err != nil {
			return err
		}
		if err := expect(cl, wire.TypeOK); err != nil {
			return err
		}
		shards = shards[n:]
	}
	return nil
}

// GetShards reads shards; each is verified on arrival. Shards received
// set Release (their buffers are pooled).
func (c *Client) GetShards(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	return c.getShards(ctx, keys, true)
}

// GetShardsUnverified implements chunkstore.UnverifiedGetter: GetShards
// without checksumming what arrives (the server verified it before
// sending; the caller verifies what it assembles).
func (c *Client) GetShardsUnverified(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	return c.getShards(ctx, keys, false)
}

func (c *Client) getShards(ctx context.Context, keys []chunkstore.ShardKey, verify bool) ([]chunkstore.ShardResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]chunkstore.ShardResult, 0, len(keys))
	const batch = 1024
	for i := 0; i < len(keys); i += batch {
		part := keys[i:min(i+batch, len(keys))]
		cl, err := c.do(ctx, wire.TypeGet, [][]byte{wire.AppendKeys(nil, part)}, len(part))
		if err != nil {
			return nil, err
		}
		for j, r := range cl.items {
			if r.Err == nil {
				var bad error
				if !part[j].Matches(r.Shard.Key) {
					bad = fmt.Errorf("%w: shard server %s answered %s for %s", chunkstore.ErrCorrupt, c.cfg.Addr, r.Shard.Key, part[j])
				} else if !verify {
					// The caller verifies.
				} else if err := r.Shard.Verify(); err != nil {
					bad = fmt.Errorf("%w (received from %s)", err, c.cfg.Addr)
				}
				if bad != nil {
					if r.Release != nil {
						r.Release()
					}
					r = chunkstore.ShardResult{Err: bad}
				}
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// GetShardRanges implements chunkstore.ShardRangeGetter: parts of shards
// read by the server, unverified (the caller verifies what it assembles).
// Results received set Release (their buffers are pooled).
func (c *Client) GetShardRanges(ctx context.Context, rs []chunkstore.ShardRange) ([]chunkstore.ShardResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]chunkstore.ShardResult, 0, len(rs))
	const batch = 1024
	for i := 0; i < len(rs); i += batch {
		part := rs[i:min(i+batch, len(rs))]
		cl, err := c.do(ctx, wire.TypeGetRng, [][]byte{wire.AppendRanges(nil, part)}, len(part))
		if err != nil {
			chunkstore.ReleaseResults(out)
			return nil, err
		}
		for j, r := range cl.items {
			if r.Err == nil && (r.Shard.Key != part[j].Key || cl.offs[j] != part[j].Off || len(r.Shard.Data) != int(part[j].Len)) {
				if r.Release != nil {
					r.Release()
				}
				r = chunkstore.ShardResult{Err: fmt.Errorf("%w: shard server %s answered %s [%d, +%d) for %s [%d, +%d)", chunkstore.ErrCorrupt,
					c.cfg.Addr, r.Shard.Key, cl.offs[j], len(r.Shard.Data), part[j].Key, part[j].Off, part[j].Len)}
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// StatShards reads shard headers.
func (c *Client) StatShards(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]chunkstore.ShardResult, 0, len(keys))
	for i := 0; i < len(keys); i += wire.MaxItems {
		part := keys[i:min(i+wire.MaxItems, len(keys))]
		cl, err := c.do(ctx, wire.TypeStat, [][]byte{wire.AppendKeys(nil, part)}, 0)
		if err != nil {
			return nil, err
		}
		if err := expect(cl, wire.TypeStatRes); err != nil {
			return nil, err
		}
		res, err := wire.DecodeStatResults(cl.resp.Payload)
		if err != nil {
			return nil, err
		}
		if len(res) != len(part) {
			return nil, fmt.Errorf("%w: %d stat results for %d keys", wire.ErrProtocol, len(res), len(part))
		}
		out = append(out, res...)
	}
	return out, nil
}

// DeleteShards deletes shards on the server.
func (c *Client) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey, writtenBefore int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	total := 0
	for i := 0; i < len(keys); i += wire.MaxItems {
		part := keys[i:min(i+wire.MaxItems, len(keys))]
		cl, err := c.do(ctx, wire.TypeDelete, [][]byte{wire.AppendDelete(nil, part, writtenBefore)}, 0)
		if err != nil {
			return total, err
		}
		if err := expect(cl, wire.TypeDelRes); err != nil {
			return total, err
		}
		n, err := wire.DecodeU32(cl.resp.Payload)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// EnumerateShards lists shard headers after after (limit is capped at
// 65536 per call).
func (c *Client) EnumerateShards(ctx context.Context, after chunkstore.ShardKey, limit int) ([]chunkstore.ShardInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit = min(limit, wire.MaxItems)
	if limit <= 0 {
		return nil, nil
	}
	cl, err := c.do(ctx, wire.TypeEnum, [][]byte{wire.AppendEnum(nil, after, limit)}, 0)
	if err != nil {
		return nil, err
	}
	if err := expect(cl, wire.TypeEnumRes); err != nil {
		return nil, err
	}
	infos, err := wire.DecodeInfos(cl.resp.Payload)
	if err != nil {
		return nil, err
	}
	if len(infos) > limit {
		return nil, fmt.Errorf("%w: %d infos for a limit of %d", wire.ErrProtocol, len(infos), limit)
	}
	return infos, nil
}

// ShardStats returns the server's store counters.
func (c *Client) ShardStats(ctx context.Context) (chunkstore.ShardStoreStats, error) {
	cl, err := c.do(ctx, wire.TypeStats, nil, 0)
	if err != nil {
		return chunkstore.ShardStoreStats{}, err
	}
	if err := expect(cl, wire.TypeStatsRs); err != nil {
		return chunkstore.ShardStoreStats{}, err
	}
	return wire.DecodeStats(cl.resp.Payload)
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	cl, err := c.do(ctx, wire.TypePing, nil, 0)
	if err != nil {
		return err
	}
	return expect(cl, wire.TypeOK)
}

// Chunks returns the whole-chunk Store view of the server (chunks as 1+0
// shards).
func (c *Client) Chunks() chunkstore.Store { return chunkstore.WholeChunks(c) }

var _ chunkstore.ShardStore = (*Client)(nil)
var _ chunkstore.ShardStatser = (*Client)(nil)
var _ journal.Log = (*Client)(nil)

// Append appends recs to the server's journal name (journal.Log). It
// returns once the server has them durably; recs are not kept.
func (c *Client) Append(ctx context.Context, name string, epoch uint64, recs []journal.Record) error {
	if err := journal.CheckAppend(name, epoch, recs); err != nil {
		return err
	}
	cl, err := c.do(ctx, wire.TypeJAppend, wire.JAppendParts(name, epoch, recs), 0)
	if err != nil {
		return err
	}
	return expect(cl, wire.TypeOK)
}

// Read seals the server's journal name at seal and returns its records
// (journal.Log).
func (c *Client) Read(ctx context.Context, name string, seal uint64) ([]journal.Record, error) {
	if err := journal.CheckName(name); err != nil {
		return nil, err
	}
	cl, err := c.do(ctx, wire.TypeJRead, [][]byte{wire.AppendJRead(nil, name, seal)}, 0)
	if err != nil {
		return nil, err
	}
	if err := expect(cl, wire.TypeJRecs); err != nil {
		return nil, err
	}
	// The answer's buffer is not recycled (accept leaves it to the GC):
	// the records may alias it.
	return wire.DecodeJRecords(cl.resp.Payload)
}

// Trim drops the server's records of journal name at or before (epoch,
// seq) (journal.Log).
func (c *Client) Trim(ctx context.Context, name string, epoch, seq uint64) error {
	if err := journal.CheckName(name); err != nil {
		return err
	}
	cl, err := c.do(ctx, wire.TypeJTrim, [][]byte{wire.AppendJTrim(nil, name, epoch, seq)}, 0)
	if err != nil {
		return err
	}
	return expect(cl, wire.TypeOK)
}

// Pool keeps one Client per address, for callers that talk to many shard
// servers (the erasure store, the healer). It is safe for concurrent use.
type Pool struct {
	base    Config
	mu      sync.Mutex
	clients map[string]*Client
	closed  bool
}

// NewPool returns a pool whose clients use base with Addr replaced.
func NewPool(base Config) *Pool {
	return &Pool{base: base, clients: map[string]*Client{}}
}

// Get returns the client for addr.
func (p *Pool) Get(addr string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if c := p.clients[addr]; c != nil {
		return c, nil
	}
	cfg := p.base
	cfg.Addr = addr
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	p.clients[addr] = c
	return c, nil
}

// Retry ends the dial backoff of addr's client, if it has one (see
// Client.Retry).
func (p *Pool) Retry(addr string) {
	p.mu.Lock()
	c := p.clients[addr]
	p.mu.Unlock()
	if c != nil {
		c.Retry()
	}
}

// Close closes every client.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	cs := p.clients
	p.clients = map[string]*Client{}
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return nil
}
