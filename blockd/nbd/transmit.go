package nbd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/blockd/nbd/internal/wire"
)

const (
	// maxReadChunks bounds the chunks of one structured READ reply; past
	// it the rest of the range is sent as one data chunk.
	maxReadChunks = 64
	// maxExtents bounds the descriptors of one BLOCK_STATUS reply (the
	// spec lets the server describe less than asked).
	maxExtents = 1 << 14
	// hdrScratch holds the chunk headers of one reply (a hole chunk, the
	// largest, is 32 bytes).
	hdrScratch = maxReadChunks * 32
)

// request is one transmission request between the reader and a worker.
// Requests are pooled; nothing in the steady state allocates.
type request struct {
	wire.Request
	buf     *[]byte // READ data or WRITE payload
	cost    int64   // bytes charged to the connection's budget
	start   time.Time
	extents []Extent
	hdr     [hdrScratch]byte
	iov     [2*maxReadChunks + 1][]byte
	bs      []byte // BLOCK_STATUS reply
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

func (r *request) free() {
	putBuf(r.buf)
	r.buf = nil
	r.extents = nil
	clear(r.iov[:])
	if cap(r.bs) > 64<<10 {
		r.bs = nil
	}
	requestPool.Put(r)
}

// transmission is the per-connection state of the transmission phase.
type transmission struct {
	work    chan *request // unbuffered: a send succeeds only to an idle worker
	workers int           // started so far (reader goroutine only)
	wg      sync.WaitGroup

	bytes atomic.Int64  // budget in use
	wake  chan struct{} // a worker released budget

	// Recent Export latency per command (EWMA, nanoseconds), for the
	// inline decision. Updated by whoever served the request; lost updates
	// between racing workers are harmless.
	latency         [numCmds]atomic.Int64
	inlineThreshold int64
}

// inlineMaxLength bounds the requests served inline: larger ones gain more
// from running in parallel than from skipping a handoff.
const inlineMaxLength = 64 << 10

// inline reports whether the reader should serve req itself: its command
// has recently been fast on this connection's export, so handing it to a
// worker (a goroutine wake-up, often on the other CPU) would cost more than
// serving it. A slow command moves to the workers at once (its EWMA jumps)
// and comes back only after a run of fast calls.
func (t *transmission) inline(req *request) bool {
	return t.inlineThreshold > 0 && req.Length <= inlineMaxLength &&
		t.latency[cmdIndex(req.Type)].Load() < t.inlineThreshold
}

// observe feeds one Export call's duration into the command's EWMA (1/8).
func (t *transmission) observe(cmd uint16, d time.Duration) {
	l := &t.latency[cmdIndex(cmd)]
	old := l.Load()
	l.Store(old + (int64(d)-old)/8)
}

// acquire charges n bytes to the budget, waiting while it is exhausted. A
// request larger than the whole budget runs alone.
func (t *transmission) acquire(n, limit int64) {
	for {
		cur := t.bytes.Load()
		if cur == 0 || cur+n <= limit {
			t.bytes.Add(n)
			return
		}
		<-t.wake
	}
}

func (t *transmission) release(n int64) {
	if n == 0 {
		return
	}
	t.bytes.Add(-n)
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// stop reasons of the read loop.
type stopReason int

const (
	stopDisc     stopReason = iota // NBD_CMD_DISC: soft disconnect
	stopShutdown                   // server shutting down
	stopHangup                     // client closed the connection
	stopError                      // I/O error or protocol violation
)

// transmit runs the transmission phase until the connection ends, then
// finishes the requests in flight, flushes (after a soft disconnect or on
// shutdown), closes the connection and releases the export.
func (c *conn) transmit() {
	c.setDeadline(time.Time{})
	if c.br.Buffered() == 0 {
		c.br = bufio.NewReaderSize(c.nc, readBufSize)
	}
	t := &transmission{work: make(chan *request), wake: make(chan struct{}, 1),
		inlineThreshold: int64(c.s.cfg.InlineThreshold)}
	for i := range t.latency {
		// Start pessimistic: a few fast calls are needed before inlining.
		t.latency[i].Store(2 * t.inlineThreshold)
	}
	c.tx = t
	c.log.Debug("transmission", "size", c.size, "flags", fmt.Sprintf("%#x", c.tflags), "structured", c.structured)

	reason, err := c.guardedReadLoop(t)
	switch reason {
	case stopDisc:
		c.log.Debug("client disconnected")
	case stopShutdown:
		c.log.Debug("stopping for shutdown")
	case stopHangup:
		c.log.Debug("client hung up without NBD_CMD_DISC")
	case stopError:
		lvl := slog.LevelWarn
		if c.killed.Load() || errors.Is(err, net.ErrClosed) {
			lvl = slog.LevelDebug
		}
		c.log.Log(c.ctx, lvl, "closing connection", "err", err)
	}
	if reason == stopHangup || reason == stopError {
		// Nobody will read the replies: cancel what is in progress.
		c.cancel()
		c.closeConn()
	}
	close(t.work)
	t.wg.Wait()
	if reason == stopDisc || reason == stopShutdown {
		c.rw.flush()
		if !c.readOnly {
			if err := c.safe(func() error { return c.exp.Flush(c.ctx) }); err != nil {
				c.log.Warn("final flush failed", "err", err)
			}
		}
		c.closeConn()
	}
	if err := c.safe(func() error { c.release(); return nil }); err != nil {
		c.log.Error("export release failed", "err", err)
	}
}

// guardedReadLoop is readLoop with a last line of defence: a panic in the
// server's own code (a bug, never an Export's: those are recovered per
// request) closes this connection instead of the process.
func (c *conn) guardedReadLoop(t *transmission) (reason stopReason, err error) {
	defer func() {
		if p := recover(); p != nil {
			reason, err = stopError, c.internalError("read loop", p)
		}
	}()
	return c.readLoop(t)
}

// internalError logs a recovered panic of the server itself.
func (c *conn) internalError(where string, p any) error {
	c.log.Error("internal error; closing connection", "where", where, "panic", p, "stack", string(debug.Stack()))
	return fmt.Errorf("%w: internal error in %s: %v", errClose, where, p)
}

// readLoop reads requests and hands them to workers until the connection
// ends.
func (c *conn) readLoop(t *transmission) (stopReason, error) {
	cfg := &c.s.cfg
	var hdr [wire.RequestSize]byte
	for {
		n, err := io.ReadFull(c.br, hdr[:])
		if err != nil {
			switch {
			case c.interruptedNow():
				return stopShutdown, nil
			case n == 0 && errors.Is(err, io.EOF):
				return stopHangup, nil
			}
			return stopError, fmt.Errorf("reading request: %w", err)
		}
		start := time.Now()
		r, magic, err := wire.DecodeRequest(hdr[:])
		if err != nil {
			return stopError, fmt.Errorf("protocol violation: request magic %#x", magic)
		}
		if r.Type == wire.CmdDisc {
			return stopDisc, nil
		}
		if rerr := c.validate(&r); rerr != nil {
			if r.Type == wire.CmdWrite {
				if int64(r.Length) > cfg.MaxSkip {
					return stopError, fmt.Errorf("invalid write of %d bytes too large to skip: %s", r.Length, rerr.msg)
				}
				if _, err := c.br.Discard(int(r.Length)); err != nil {
					return stopError, fmt.Errorf("skipping write payload: %w", err)
				}
			}
			c.s.m.requests[cmdIndex(r.Type)].Inc()
			c.replyError(&r, rerr.errno, rerr.msg)
			continue
		}

		req := requestPool.Get().(*request)
		req.Request = r
		req.start = start
		req.cost = 0
		if r.Type == wire.CmdRead || r.Type == wire.CmdWrite {
			req.cost = int64(bufCap(int(r.Length)))
			t.acquire(req.cost, cfg.MaxInFlightBytes)
			req.buf = getBuf(int(r.Length))
			if r.Type == wire.CmdWrite {
				if _, err := io.ReadFull(c.br, *req.buf); err != nil {
					t.release(req.cost)
					req.free()
					if c.interruptedNow() {
						return stopShutdown, nil
					}
					return stopError, fmt.Errorf("reading write payload: %w", err)
				}
			}
		}
		c.s.m.inFlight.Inc()
		if t.inline(req) {
			c.guardedServe(req)
			t.release(req.cost)
			req.free()
			continue
		}
		c.dispatch(t, req)
	}
}

// dispatch hands req to an idle worker, starts a worker if none is idle
// and the bound allows, or waits for one.
func (c *conn) dispatch(t *transmission, req *request) {
	select {
	case t.work <- req:
		return
	default:
	}
	if t.workers < c.s.cfg.MaxInFlightRequests {
		t.workers++
		t.wg.Add(1)
		go c.worker(t, req)
		return
	}
	t.work <- req
}

func (c *conn) worker(t *transmission, req *request) {
	defer t.wg.Done()
	for {
		c.guardedServe(req)
		t.release(req.cost)
		req.free()
		var ok bool
		if req, ok = <-t.work; !ok {
			return
		}
	}
}

// validate checks a request against the spec and the negotiated state.
func (c *conn) validate(r *wire.Request) *requestError {
	var allowed uint16
	switch r.Type {
	case wire.CmdRead:
		allowed = wire.CmdFlagFUA | wire.CmdFlagDF
	case wire.CmdWrite, wire.CmdFlush, wire.CmdTrim, wire.CmdCache:
		allowed = wire.CmdFlagFUA
	case wire.CmdWriteZeroes:
		allowed = wire.CmdFlagFUA | wire.CmdFlagNoHole | wire.CmdFlagFastZero
	case wire.CmdBlockStatus:
		allowed = wire.CmdFlagFUA | wire.CmdFlagReqOne
	default:
		return reqErr(wire.EINVAL, "unknown command %d", r.Type)
	}
	name := wire.CommandName(r.Type)
	switch {
	case r.Flags&^allowed != 0:
		return reqErr(wire.EINVAL, "flags %#x are not valid for %s", r.Flags&^allowed, name)
	case r.Flags&wire.CmdFlagFUA != 0 && c.tflags&wire.TFlagSendFUA == 0:
		return reqErr(wire.EINVAL, "FUA flag was not negotiated")
	case r.Flags&wire.CmdFlagDF != 0 && !c.structured:
		return reqErr(wire.EINVAL, "DF flag needs structured replies")
	case r.Flags&wire.CmdFlagFastZero != 0 && c.tflags&wire.TFlagSendFastZero == 0:
		return reqErr(wire.EINVAL, "FAST_ZERO flag was not negotiated")
	}
	if c.readOnly && (r.Type == wire.CmdWrite || r.Type == wire.CmdTrim || r.Type == wire.CmdWriteZeroes) {
		return reqErr(wire.EPERM, "%s on a read-only export", name)
	}
	if r.Type == wire.CmdFlush {
		if r.Offset != 0 || r.Length != 0 {
			return reqErr(wire.EINVAL, "flush with nonzero offset or length")
		}
		return nil
	}
	if r.Length == 0 {
		return reqErr(wire.EINVAL, "zero-length %s", name)
	}
	if r.Offset > c.size || uint64(r.Length) > c.size-r.Offset {
		errno := wire.EINVAL
		if r.Type == wire.CmdWrite || r.Type == wire.CmdWriteZeroes {
			errno = wire.ENOSPC
		}
		return reqErr(errno, "%s of %d bytes at offset %d is past the end of the export (%d bytes)", name, r.Length, r.Offset, c.size)
	}
	if (r.Type == wire.CmdRead || r.Type == wire.CmdWrite) && int(r.Length) > c.s.cfg.MaxRequestSize {
		return reqErr(wire.EINVAL, "%s of %d bytes exceeds the maximum request size %d", name, r.Length, c.s.cfg.MaxRequestSize)
	}
	if r.Type == wire.CmdBlockStatus && !c.metaAlloc {
		return reqErr(wire.EINVAL, "block status without a negotiated base:allocation context")
	}
	return nil
}

// safe runs f, turning a panic into an error (logged with its stack).
func (c *conn) safe(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.s.m.panics.Inc()
			c.log.Error("export panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", errPanic, p)
		}
	}()
	return f()
}

// exec calls the export for req. A panic becomes an error.
func (c *conn) exec(req *request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			c.s.m.panics.Inc()
			c.log.Error("export panicked", "command", wire.CommandName(req.Type), "offset", req.Offset,
				"length", req.Length, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%w (logged on the server)", errPanic)
		}
	}()
	off, n := int64(req.Offset), int64(req.Length)
	fua := req.Flags&wire.CmdFlagFUA != 0
	switch req.Type {
	case wire.CmdRead:
		// Buffers are recycled across connections and exports: never let
		// an Export that fills less than asked leak another's data.
		if !c.fills {
			clear(*req.buf)
		}
		return c.exp.ReadAt(c.ctx, *req.buf, off)
	case wire.CmdWrite:
		return c.exp.WriteAt(c.ctx, *req.buf, off, fua)
	case wire.CmdFlush:
		return c.exp.Flush(c.ctx)
	case wire.CmdTrim:
		return c.exp.Trim(c.ctx, off, n, fua)
	case wire.CmdWriteZeroes:
		var zf ZeroFlags
		if fua {
			zf |= ZeroFUA
		}
		if req.Flags&wire.CmdFlagNoHole != 0 {
			zf |= ZeroNoHole
		}
		if req.Flags&wire.CmdFlagFastZero != 0 {
			zf |= ZeroFast
		}
		return c.exp.WriteZeroes(c.ctx, off, n, zf)
	case wire.CmdCache:
		if ch, ok := c.exp.(Cacher); ok {
			return ch.Cache(c.ctx, off, n)
		}
		return nil
	case wire.CmdBlockStatus:
		req.extents, err = c.exp.BlockStatus(c.ctx, off, n)
		return err
	}
	return fmt.Errorf("nbd: unexpected command %d", req.Type)
}

// guardedServe is serve with a last line of defence against a bug in the
// reply code: the connection is closed (its stream may hold half a reply)
// and the server goes on.
func (c *conn) guardedServe(req *request) {
	defer func() {
		if p := recover(); p != nil {
			c.internalError("request "+wire.CommandName(req.Type), p)
			c.s.m.inFlight.Dec()
			c.raw.Close()
		}
	}()
	c.serve(req)
}

// serve executes one request and sends its reply.
func (c *conn) serve(req *request) {
	t0 := time.Now()
	err := c.exec(req)
	c.tx.observe(req.Type, time.Since(t0))
	idx := cmdIndex(req.Type)
	m := c.s.m
	if err == nil {
		switch req.Type {
		case wire.CmdRead:
			if c.structured {
				err = c.sendStructuredRead(req)
			} else {
				h := wire.AppendSimpleReply(req.hdr[:0], 0, req.Handle)
				c.rw.send(h, *req.buf)
			}
			m.readBytes.Add(float64(req.Length))
		case wire.CmdBlockStatus:
			err = c.sendBlockStatus(req)
		default:
			if req.Type == wire.CmdWrite {
				m.writeBytes.Add(float64(req.Length))
			}
			c.rw.send(wire.AppendSimpleReply(req.hdr[:0], 0, req.Handle))
		}
	}
	if err != nil {
		errno := errnoOf(err, c.s.shutting.Load())
		if errno == wire.EIO {
			c.log.Warn("request failed", "command", wire.CommandName(req.Type), "offset", req.Offset, "length", req.Length, "err", err)
		}
		c.replyError(&req.Request, errno, err.Error())
	}
	m.requests[idx].Inc()
	m.duration[idx].Observe(time.Since(req.start).Seconds())
	m.inFlight.Dec()
}

// replyError sends an error reply: an error chunk with the message when
// structured replies are on, a simple reply otherwise.
func (c *conn) replyError(r *wire.Request, errno uint32, msg string) {
	c.s.m.errors.WithLabelValues(cmdLabel(cmdIndex(r.Type)), wire.ErrnoName(errno)).Inc()
	var b [wire.StructuredHeaderSize + 6 + 256]byte
	if c.structured {
		if len(msg) > 256 {
			msg = msg[:256]
		}
		c.rw.send(wire.AppendErrorChunk(b[:0], r.Handle, errno, msg))
		return
	}
	c.rw.send(wire.AppendSimpleReply(b[:0], errno, r.Handle))
}

var zeroBlock [64 << 10]byte

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// sendStructuredRead sends READ data as OFFSET_DATA chunks, with aligned
// all-zero runs of at least HoleGranularity bytes as OFFSET_HOLE chunks
// (unless the client set DF).
func (c *conn) sendStructuredRead(req *request) error {
	data := *req.buf
	off := req.Offset
	g := c.s.cfg.HoleGranularity
	if g <= 0 || req.Flags&wire.CmdFlagDF != 0 || len(data) < g {
		h := wire.AppendDataChunkHeader(req.hdr[:0], wire.ReplyFlagDone, req.Handle, off, uint32(len(data)))
		c.rw.send(h, data)
		return nil
	}
	// Runs of data and holes, in order. The unaligned head and tail are
	// data.
	type run struct {
		start, end int
		hole       bool
	}
	var runsArr [maxReadChunks]run
	runs := runsArr[:0]
	add := func(start, end int, hole bool) {
		if n := len(runs); n > 0 && runs[n-1].hole == hole {
			runs[n-1].end = end
			return
		}
		runs = append(runs, run{start, end, hole})
	}
	head := int((uint64(g) - off%uint64(g)) % uint64(g))
	if head > len(data) {
		head = len(data)
	}
	if head > 0 {
		add(0, head, false)
	}
	p := head
	for p+g <= len(data) {
		hole := isZero(data[p : p+g])
		if n := len(runs); n >= maxReadChunks-1 && runs[n-1].hole != hole {
			break // chunk budget spent: the rest goes as one data run
		}
		add(p, p+g, hole)
		p += g
	}
	if p < len(data) {
		add(p, len(data), false)
	}
	h := req.hdr[:0]
	iov := req.iov[:0]
	for i, r := range runs {
		var flags uint16
		if i == len(runs)-1 {
			flags = wire.ReplyFlagDone
		}
		s := len(h)
		if r.hole {
			h = wire.AppendHoleChunk(h, flags, req.Handle, off+uint64(r.start), uint32(r.end-r.start))
			iov = append(iov, h[s:])
			continue
		}
		h = wire.AppendDataChunkHeader(h, flags, req.Handle, off+uint64(r.start), uint32(r.end-r.start))
		iov = append(iov, h[s:], data[r.start:r.end])
	}
	c.rw.send(iov...)
	return nil
}

// sendBlockStatus sends the export's extents as one base:allocation chunk.
func (c *conn) sendBlockStatus(req *request) error {
	remaining := int64(req.Length)
	reqOne := req.Flags&wire.CmdFlagReqOne != 0
	var last wire.Extent
	count := 0
	b := wire.AppendStructuredHeader(req.bs[:0], wire.ReplyFlagDone, wire.ReplyTypeBlockStatus, req.Handle, 0)
	b = append(b, 0, 0, 0, metaContextID)
	emit := func() {
		b = append(b, byte(last.Length>>24), byte(last.Length>>16), byte(last.Length>>8), byte(last.Length),
			byte(last.Flags>>24), byte(last.Flags>>16), byte(last.Flags>>8), byte(last.Flags))
		count++
	}
	for _, e := range req.extents {
		if e.Length <= 0 || remaining == 0 {
			break
		}
		l := min(e.Length, remaining)
		f := uint32(e.Flags) & (wire.StateHole | wire.StateZero)
		if last.Length > 0 && last.Flags == f {
			last.Length += uint32(l)
		} else {
			if last.Length > 0 {
				if reqOne || count+1 >= maxExtents {
					break
				}
				emit()
			}
			last = wire.Extent{Length: uint32(l), Flags: f}
		}
		remaining -= l
	}
	if last.Length == 0 {
		return fmt.Errorf("nbd: export returned no extents for %d bytes at offset %d", req.Length, req.Offset)
	}
	emit()
	// Patch the chunk length now that the descriptor count is known.
	n := uint32(4 + 8*count)
	b[16], b[17], b[18], b[19] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	req.bs = b
	c.rw.send(b)
	return nil
}
