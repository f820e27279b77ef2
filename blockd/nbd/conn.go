package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/blockd/nbd/internal/wire"
)

const (
	// Read buffers: small while negotiating, larger in transmission.
	negotiationBufSize = 4 << 10
	readBufSize        = 64 << 10
	// maxOptionLength bounds the option data the server reads into memory;
	// larger options up to maxOptionSkip are discarded and answered
	// NBD_REP_ERR_TOO_BIG, beyond that the connection is closed.
	maxOptionLength = 64 << 10
	maxOptionSkip   = 1 << 20
	// metaContextID is the id given to base:allocation.
	metaContextID = 1
)

// errClose ends a connection without a clean disconnect; the reason is
// logged by whoever returns it.
var errClose = errors.New("nbd: closing connection")

// conn is one client connection: handshake, then transmission.
type conn struct {
	s   *Server
	log *slog.Logger

	raw net.Conn // the accepted connection: deadlines and Close
	nc  net.Conn // raw or the TLS connection over it
	br  *bufio.Reader
	rw  *replyWriter

	ctx    context.Context // Export calls on this connection
	cancel context.CancelFunc

	dmu         sync.Mutex // guards deadline changes against interrupt
	interrupted bool
	killed      atomic.Bool

	// negotiation state
	tls        bool
	noZeroes   bool
	structured bool
	metaAlloc  bool   // base:allocation selected
	metaExport string // export named by the last SET_META_CONTEXT
	optBuf     []byte
	scratch    []byte

	// transmission state
	exp      Export
	fills    bool // exp is a FullReader that fills its reads
	info     ExportInfo
	release  func()
	size     uint64
	tflags   uint16
	readOnly bool
	tx       *transmission
}

func (s *Server) serveConn(nc net.Conn) {
	ctx, cancel := context.WithCancel(s.baseCtx)
	c := &conn{
		s:      s,
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		raw:    nc,
		nc:     nc,
		ctx:    ctx,
		cancel: cancel,
	}
	defer cancel()
	if !s.trackConn(c, true) {
		nc.Close()
		return
	}
	defer s.trackConn(c, false)
	s.m.connsTotal.Inc()
	s.m.connsActive.Inc()
	defer s.m.connsActive.Dec()

	c.br = bufio.NewReaderSize(nc, negotiationBufSize)
	c.rw = newReplyWriter(nc)
	if err := c.guardedNegotiate(); err != nil {
		if errors.Is(err, errAbort) {
			s.m.handshakes.WithLabelValues("abort").Inc()
			c.log.Debug("client aborted negotiation")
		} else {
			s.m.handshakes.WithLabelValues("error").Inc()
			lvl := slog.LevelWarn
			if c.interruptedNow() || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				lvl = slog.LevelDebug
			}
			c.log.Log(c.ctx, lvl, "negotiation failed", "err", err)
		}
		c.closeConn()
		return
	}
	s.m.handshakes.WithLabelValues("ok").Inc()
	c.transmit()
}

// interrupt asks the connection to stop reading (graceful shutdown): a
// blocked read returns at once and no later deadline undoes it.
func (c *conn) interrupt() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.interrupted = true
	c.raw.SetReadDeadline(time.Unix(1, 0))
}

func (c *conn) interruptedNow() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.interrupted
}

// setDeadline sets the read and write deadline unless interrupted (then
// only the write deadline).
func (c *conn) setDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.raw.SetWriteDeadline(t)
	if !c.interrupted {
		c.raw.SetReadDeadline(t)
	}
}

// kill closes the connection at once (Server.Close).
func (c *conn) kill() {
	c.killed.Store(true)
	c.cancel()
	c.raw.Close()
}

func (c *conn) closeConn() {
	if t, ok := c.nc.(*tls.Conn); ok && !c.killed.Load() {
		// close_notify, bounded so a stuck peer cannot hold us.
		c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		t.Close()
		return
	}
	c.raw.Close()
}

// errAbort is returned by negotiate when the client sent NBD_OPT_ABORT.
var errAbort = errors.New("nbd: client aborted negotiation")

// guardedNegotiate is negotiate with a last line of defence against a bug
// in the server's own code: the connection closes, the process lives.
func (c *conn) guardedNegotiate() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.internalError("negotiation", p)
		}
	}()
	return c.negotiate()
}

// negotiate runs the fixed newstyle handshake until the client enters
// transmission (nil) or the connection must close (error).
func (c *conn) negotiate() error {
	cfg := &c.s.cfg
	c.setDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if c.interruptedNow() {
		return fmt.Errorf("%w: server shutting down", errClose)
	}

	hello := make([]byte, 0, wire.NewstyleHeaderSize)
	hello = binary.BigEndian.AppendUint64(hello, wire.MagicNBD)
	hello = binary.BigEndian.AppendUint64(hello, wire.MagicOption)
	hello = binary.BigEndian.AppendUint16(hello, wire.FlagFixedNewstyle|wire.FlagNoZeroes)
	if _, err := c.nc.Write(hello); err != nil {
		return fmt.Errorf("sending greeting: %w", err)
	}
	var b4 [4]byte
	if _, err := io.ReadFull(c.br, b4[:]); err != nil {
		return fmt.Errorf("reading client flags: %w", err)
	}
	cflags := binary.BigEndian.Uint32(b4[:])
	if cflags&^(wire.ClientFlagFixedNewstyle|wire.ClientFlagNoZeroes) != 0 {
		return fmt.Errorf("%w: unknown client flags %#x", errClose, cflags)
	}
	c.noZeroes = cflags&wire.ClientFlagNoZeroes != 0
	if cfg.RequireTLS && cflags&wire.ClientFlagFixedNewstyle == 0 {
		return fmt.Errorf("%w: TLS required but client does not speak fixed newstyle", errClose)
	}

	var hdr [wire.OptionHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return fmt.Errorf("reading option: %w", err)
		}
		h, err := wire.DecodeOptionHeader(hdr[:])
		if err != nil {
			return fmt.Errorf("%w: %v", errClose, err)
		}
		if h.Length > maxOptionLength {
			if h.Length > maxOptionSkip || h.Option == wire.OptExportName {
				return fmt.Errorf("%w: option %s with %d bytes of data", errClose, wire.OptionName(h.Option), h.Length)
			}
			if _, err := c.br.Discard(int(h.Length)); err != nil {
				return fmt.Errorf("skipping option data: %w", err)
			}
			if err := c.optReply(h.Option, wire.RepErrTooBig, fmt.Sprintf("option data of %d bytes exceeds %d", h.Length, maxOptionLength)); err != nil {
				return err
			}
			continue
		}
		if cap(c.optBuf) < int(h.Length) {
			c.optBuf = make([]byte, h.Length)
		}
		data := c.optBuf[:h.Length]
		if _, err := io.ReadFull(c.br, data); err != nil {
			return fmt.Errorf("reading option data: %w", err)
		}
		done, err := c.option(h.Option, data)
		if err != nil || done {
			return err
		}
	}
}

// option handles one option; done reports that transmission starts.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	cfg := &c.s.cfg
	if opt == wire.OptAbort {
		// Best effort: the client may already have gone.
		c.optReply(opt, wire.RepAck, "")
		return false, errAbort
	}
	if c.s.shutting.Load() {
		if opt == wire.OptExportName {
			return false, fmt.Errorf("%w: server shutting down", errClose)
		}
		return false, c.optReply(opt, wire.RepErrShutdown, "server is shutting down")
	}
	if cfg.RequireTLS && !c.tls && opt != wire.OptStartTLS {
		if opt == wire.OptExportName {
			return false, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME before TLS, which this server requires", errClose)
		}
		return false, c.optReply(opt, wire.RepErrTLSReqd, "this server requires TLS: upgrade with NBD_OPT_STARTTLS")
	}
	switch opt {
	case wire.OptExportName:
		return c.optExportName(data)
	case wire.OptList:
		return false, c.optList(data)
	case wire.OptStartTLS:
		return false, c.optStartTLS(data)
	case wire.OptInfo, wire.OptGo:
		return c.optInfoGo(opt, data)
	case wire.OptStructuredReply:
		if len(data) != 0 {
			return false, c.optReply(opt, wire.RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		c.structured = true
		return false, c.optReply(opt, wire.RepAck, "")
	case wire.OptListMetaContext, wire.OptSetMetaContext:
		return false, c.optMetaContext(opt, data)
	default:
		return false, c.optReply(opt, wire.RepErrUnsup, fmt.Sprintf("option %s is not supported", wire.OptionName(opt)))
	}
}

// optReply sends one option reply with an optional message (for errors)
// and flushes it.
func (c *conn) optReply(opt, typ uint32, msg string) error {
	if len(msg) > wire.MaxString {
		msg = msg[:wire.MaxString]
	}
	b := wire.AppendOptionReplyHeader(c.scratch[:0], opt, typ, uint32(len(msg)))
	b = append(b, msg...)
	c.scratch = b
	if err := c.rw.send(b); err != nil {
		return fmt.Errorf("sending option reply: %w", err)
	}
	return nil
}

// optData sends one option reply whose payload is data.
func (c *conn) optData(opt, typ uint32, data []byte) error {
	b := wire.AppendOptionReplyHeader(c.scratch[:0], opt, typ, uint32(len(data)))
	b = append(b, data...)
	c.scratch = b
	if err := c.rw.send(b); err != nil {
		return fmt.Errorf("sending option reply: %w", err)
	}
	return nil
}

func (c *conn) optStartTLS(data []byte) error {
	const opt = wire.OptStartTLS
	switch {
	case len(data) != 0:
		return c.optReply(opt, wire.RepErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case c.tls:
		return c.optReply(opt, wire.RepErrInvalid, "TLS is already active")
	case c.s.cfg.TLS == nil:
		return c.optReply(opt, wire.RepErrUnsup, "TLS is not configured on this server")
	}
	if err := c.optReply(opt, wire.RepAck, ""); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		return fmt.Errorf("%w: client sent data after NBD_OPT_STARTTLS before the TLS handshake", errClose)
	}
	tc := tls.Server(c.raw, c.s.cfg.TLS)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return fmt.Errorf("%w: TLS handshake: %v", errClose, err)
	}
	c.nc = tc
	c.br = bufio.NewReaderSize(tc, negotiationBufSize)
	c.rw.reset(tc)
	c.tls = true
	// The spec: no negotiation state survives STARTTLS.
	c.structured = false
	c.metaAlloc = false
	c.metaExport = ""
	c.log = c.log.With("tls", true)
	return nil
}

func (c *conn) optList(data []byte) error {
	const opt = wire.OptList
	if len(data) != 0 {
		return c.optReply(opt, wire.RepErrInvalid, "NBD_OPT_LIST takes no data")
	}
	list, err := c.s.cfg.Exports.List(c.ctx)
	if err != nil {
		return c.optReply(opt, c.optErrType(err, wire.RepErrPolicy), err.Error())
	}
	var p []byte
	for _, e := range list {
		name, desc := clipString(e.Name), clipString(e.Description)
		p = binary.BigEndian.AppendUint32(p[:0], uint32(len(name)))
		p = append(p, name...)
		p = append(p, desc...)
		if err := c.optData(opt, wire.RepServer, p); err != nil {
			return err
		}
	}
	return c.optReply(opt, wire.RepAck, "")
}

func clipString(s string) string {
	if len(s) > wire.MaxString {
		return s[:wire.MaxString]
	}
	return s
}

// optErrType maps an Exports error to an option error reply type.
func (c *conn) optErrType(err error, other uint32) uint32 {
	switch {
	case errors.Is(err, ErrUnknownExport):
		return wire.RepErrUnknown
	case errors.Is(err, ErrAttached):
		return wire.RepErrPolicy
	case c.s.shutting.Load():
		return wire.RepErrShutdown
	}
	return other
}

// transmissionFlags returns the flags advertised for an export.
func (c *conn) transmissionFlags(info ExportInfo) uint16 {
	f := wire.TFlagHasFlags | wire.TFlagSendFlush | wire.TFlagSendCache
	if info.ReadOnly {
		f |= wire.TFlagReadOnly
	} else {
		f |= wire.TFlagSendFUA | wire.TFlagSendTrim | wire.TFlagSendWriteZeroes | wire.TFlagSendFastZero
	}
	if info.MultiConn {
		f |= wire.TFlagCanMultiConn
	}
	if c.structured {
		f |= wire.TFlagSendDF
	}
	return f
}

// blockSizes returns the advertised minimum, preferred and maximum block
// sizes: any alignment works, the export's block size is preferred, and
// READ/WRITE are bounded by MaxRequestSize.
func (c *conn) blockSizes(info ExportInfo) (uint32, uint32, uint32) {
	pref := info.BlockSize
	if pref < 512 || pref&(pref-1) != 0 {
		pref = DefaultPreferredBlockSize
	}
	maxSize := uint32(c.s.cfg.MaxRequestSize)
	if pref > maxSize {
		pref = maxSize &^ (maxSize - 1) // largest power of two <= max
		for pref*2 <= maxSize && pref*2 != 0 {
			pref *= 2
		}
	}
	return 1, pref, maxSize
}

func (c *conn) optInfoGo(opt uint32, data []byte) (bool, error) {
	req, err := wire.ParseInfoRequest(data)
	if err != nil {
		return false, c.optReply(opt, wire.RepErrInvalid, err.Error())
	}
	var (
		info    ExportInfo
		exp     Export
		release func()
		size    int64
	)
	if opt == wire.OptGo {
		exp, info, release, err = c.s.cfg.Exports.Open(c.ctx, req.Name)
		if err == nil {
			if size, err = c.exportSize(exp); err != nil {
				release()
				release = nil
			}
		}
	} else {
		info, err = c.s.cfg.Exports.Info(c.ctx, req.Name)
		size = info.Size
	}
	if err != nil {
		c.log.Debug("export refused", "export", req.Name, "option", wire.OptionName(opt), "err", err)
		return false, c.optReply(opt, c.optErrType(err, wire.RepErrUnknown), err.Error())
	}
	fail := func(err error) (bool, error) {
		if release != nil {
			release()
		}
		return false, err
	}
	if size < 0 {
		if err := c.optReply(opt, wire.RepErrUnknown, fmt.Sprintf("export %q reports a negative size", req.Name)); err != nil {
			return fail(err)
		}
		return fail(nil)
	}
	if info.Name == "" {
		info.Name = req.Name
	}
	flags := c.transmissionFlags(info)
	var p []byte
	p = binary.BigEndian.AppendUint16(p, wire.InfoExport)
	p = binary.BigEndian.AppendUint64(p, uint64(size))
	p = binary.BigEndian.AppendUint16(p, flags)
	if err := c.optData(opt, wire.RepInfo, p); err != nil {
		return fail(err)
	}
	for _, t := range req.Infos {
		p = p[:0]
		switch t {
		case wire.InfoName:
			p = binary.BigEndian.AppendUint16(p, wire.InfoName)
			p = append(p, clipString(info.Name)...)
		case wire.InfoDescription:
			if info.Description == "" {
				continue
			}
			p = binary.BigEndian.AppendUint16(p, wire.InfoDescription)
			p = append(p, clipString(info.Description)...)
		default:
			continue
		}
		if err := c.optData(opt, wire.RepInfo, p); err != nil {
			return fail(err)
		}
	}
	// Block sizes are sent even when not requested (as qemu-nbd does): a
	// client that did not ask must ignore them, one that did must obey.
	minB, prefB, maxB := c.blockSizes(info)
	p = binary.BigEndian.AppendUint16(p[:0], wire.InfoBlockSize)
	p = binary.BigEndian.AppendUint32(p, minB)
	p = binary.BigEndian.AppendUint32(p, prefB)
	p = binary.BigEndian.AppendUint32(p, maxB)
	if err := c.optData(opt, wire.RepInfo, p); err != nil {
		return fail(err)
	}
	if err := c.optReply(opt, wire.RepAck, ""); err != nil {
		return fail(err)
	}
	if opt == wire.OptInfo {
		return false, nil
	}
	c.enter(req.Name, exp, info, release, uint64(size), flags)
	return true, nil
}

func (c *conn) optExportName(data []byte) (bool, error) {
	if len(data) > wire.MaxString {
		return false, fmt.Errorf("%w: export name of %d bytes", errClose, len(data))
	}
	name := string(data)
	exp, info, release, err := c.s.cfg.Exports.Open(c.ctx, name)
	if err != nil {
		// NBD_OPT_EXPORT_NAME cannot report errors: the spec says close.
		return false, fmt.Errorf("%w: export %q: %v", errClose, name, err)
	}
	size, err := c.exportSize(exp)
	if err != nil || size < 0 {
		release()
		return false, fmt.Errorf("%w: export %q: size %d: %v", errClose, name, size, err)
	}
	if info.Name == "" {
		info.Name = name
	}
	flags := c.transmissionFlags(info)
	var p [wire.ExportNameReplySize + wire.ExportNameZeroes]byte
	binary.BigEndian.PutUint64(p[0:], uint64(size))
	binary.BigEndian.PutUint16(p[8:], flags)
	n := len(p)
	if c.noZeroes {
		n = wire.ExportNameReplySize
	}
	if err := c.rw.send(p[:n]); err != nil {
		release()
		return false, fmt.Errorf("sending export info: %w", err)
	}
	c.enter(name, exp, info, release, uint64(size), flags)
	return true, nil
}

// exportSize calls exp.Size, turning a panic into an error.
func (c *conn) exportSize(exp Export) (size int64, err error) {
	err = c.safe(func() error { size = exp.Size(); return nil })
	return size, err
}

// enter records the export chosen for transmission.
func (c *conn) enter(name string, exp Export, info ExportInfo, release func(), size uint64, flags uint16) {
	if c.metaExport != name {
		// Contexts were selected for another export: the client may not
		// use them here (the spec; nbdkit does the same).
		c.metaAlloc = false
	}
	c.exp, c.info, c.release, c.size, c.tflags = exp, info, release, size, flags
	fr, ok := exp.(FullReader)
	c.fills = ok && fr.FillsReads()
	c.readOnly = info.ReadOnly
	c.log = c.log.With("export", name)
}

func (c *conn) optMetaContext(opt uint32, data []byte) error {
	if opt == wire.OptSetMetaContext {
		// Replaced even when the option fails.
		c.metaAlloc = false
		c.metaExport = ""
	}
	if !c.structured {
		return c.optReply(opt, wire.RepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first")
	}
	req, err := wire.ParseMetaContextRequest(data)
	if err != nil {
		return c.optReply(opt, wire.RepErrInvalid, err.Error())
	}
	match := false
	if opt == wire.OptListMetaContext && len(req.Queries) == 0 {
		match = true
	}
	for _, q := range req.Queries {
		// base:allocation is the only context; "base:" lists the base
		// namespace but selects nothing. Other namespaces are ignored.
		if q == wire.MetaContextBaseAllocation || (opt == wire.OptListMetaContext && q == "base:") {
			match = true
		}
	}
	if match {
		var id uint32 // reserved (0) in LIST replies
		if opt == wire.OptSetMetaContext {
			id = metaContextID
			c.metaAlloc = true
			c.metaExport = req.Export
		}
		p := binary.BigEndian.AppendUint32(nil, id)
		p = append(p, wire.MetaContextBaseAllocation...)
		if err := c.optData(opt, wire.RepMetaContext, p); err != nil {
			return err
		}
	} else if opt == wire.OptSetMetaContext {
		c.metaExport = req.Export
	}
	return c.optReply(opt, wire.RepAck, "")
}
