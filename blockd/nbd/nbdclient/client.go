package nbdclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/zosproject/zos/blockd/nbd/internal/wire"
)

// Options select what the client negotiates.
type Options struct {
	Export     string
	TLS        *tls.Config // STARTTLS first when set
	Structured bool        // NBD_OPT_STRUCTURED_REPLY
	MetaAlloc  bool        // SET_META_CONTEXT base:allocation (needs Structured)
	ExportName bool        // enter with NBD_OPT_EXPORT_NAME instead of GO
	NoZeroes   bool        // NBD_FLAG_C_NO_ZEROES
}

// Conn is a negotiated client connection.
type Conn struct {
	nc net.Conn
	br *bufio.Reader
	wm sync.Mutex

	Size       uint64
	Flags      uint16
	BlockSizes [3]uint32 // min, preferred, max (GO only; zero if not sent)
	Structured bool
	MetaID     uint32 // base:allocation context id (MetaAlloc)
	MetaOK     bool

	mu      sync.Mutex
	pending map[uint64]wire.Request
	handle  uint64
	partial map[uint64]*Reply // structured replies still receiving chunks
}

// Error is an NBD error reply.
type Error struct {
	Errno uint32
	Msg   string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("nbd %s: %s", wire.ErrnoName(e.Errno), e.Msg)
	}
	return "nbd " + wire.ErrnoName(e.Errno)
}

// Errno returns the NBD error of err (0 if err is not an *Error).
func Errno(err error) uint32 {
	var e *Error
	if errors.As(err, &e) {
		return e.Errno
	}
	return 0
}

// OptionError is an option refused by the server.
type OptionError struct {
	Option, Type uint32
	Msg          string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("option %s refused: reply %#x: %s", wire.OptionName(e.Option), e.Type, e.Msg)
}

// Dial connects to addr over TCP and negotiates.
func Dial(addr string, o Options) (*Conn, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := Negotiate(nc, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Hello reads the server greeting and sends client flags.
func Hello(nc net.Conn, br *bufio.Reader, cflags uint32) (uint16, error) {
	var g [wire.NewstyleHeaderSize]byte
	if _, err := io.ReadFull(br, g[:]); err != nil {
		return 0, fmt.Errorf("greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[:]) != wire.MagicNBD || binary.BigEndian.Uint64(g[8:]) != wire.MagicOption {
		return 0, fmt.Errorf("bad greeting %x", g)
	}
	hf := binary.BigEndian.Uint16(g[16:])
	if _, err := nc.Write(binary.BigEndian.AppendUint32(nil, cflags)); err != nil {
		return 0, err
	}
	return hf, nil
}

// OptionReply is one reply to an option.
type OptionReply struct {
	Type uint32
	Data []byte
}

// Option sends an option and reads replies up to the final one (ACK or an
// error); intermediate replies (SERVER, INFO, META_CONTEXT) are returned
// first.
func Option(nc net.Conn, br *bufio.Reader, opt uint32, data []byte) ([]OptionReply, error) {
	if _, err := nc.Write(wire.AppendOption(nil, opt, data)); err != nil {
		return nil, err
	}
	var out []OptionReply
	for {
		var h [wire.OptionReplyHeaderSize]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return out, fmt.Errorf("option %s reply: %w", wire.OptionName(opt), err)
		}
		rh, err := wire.DecodeOptionReplyHeader(h[:])
		if err != nil {
			return out, err
		}
		if rh.Option != opt {
			return out, fmt.Errorf("reply for option %d to option %d", rh.Option, opt)
		}
		if rh.Length > 1<<20 {
			return out, fmt.Errorf("option reply of %d bytes", rh.Length)
		}
		d := make([]byte, rh.Length)
		if _, err := io.ReadFull(br, d); err != nil {
			return out, err
		}
		out = append(out, OptionReply{Type: rh.Type, Data: d})
		if rh.Type == wire.RepAck || rh.Type&wire.RepFlagError != 0 {
			return out, nil
		}
	}
}

// Final returns an error if the last reply is an error.
func Final(opt uint32, rs []OptionReply) error {
	if len(rs) == 0 {
		return fmt.Errorf("no reply to %s", wire.OptionName(opt))
	}
	last := rs[len(rs)-1]
	if last.Type != wire.RepAck {
		return &OptionError{Option: opt, Type: last.Type, Msg: string(last.Data)}
	}
	return nil
}

// Negotiate runs the handshake on nc.
func Negotiate(nc net.Conn, o Options) (*Conn, error) {
	br := bufio.NewReaderSize(nc, 256<<10)
	cflags := wire.ClientFlagFixedNewstyle
	if o.NoZeroes {
		cflags |= wire.ClientFlagNoZeroes
	}
	if _, err := Hello(nc, br, cflags); err != nil {
		return nil, err
	}
	if o.TLS != nil {
		rs, err := Option(nc, br, wire.OptStartTLS, nil)
		if err != nil {
			return nil, err
		}
		if err := Final(wire.OptStartTLS, rs); err != nil {
			return nil, err
		}
		tc := tls.Client(nc, o.TLS)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		nc = tc
		br = bufio.NewReaderSize(tc, 256<<10)
	}
	c := &Conn{nc: nc, br: br, pending: make(map[uint64]wire.Request), partial: make(map[uint64]*Reply)}
	if o.Structured {
		rs, err := Option(nc, br, wire.OptStructuredReply, nil)
		if err != nil {
			return nil, err
		}
		if err := Final(wire.OptStructuredReply, rs); err != nil {
			return nil, err
		}
		c.Structured = true
	}
	if o.MetaAlloc {
		rs, err := Option(nc, br, wire.OptSetMetaContext, wire.AppendMetaContextRequest(nil,
			wire.MetaContextRequest{Export: o.Export, Queries: []string{wire.MetaContextBaseAllocation}}))
		if err != nil {
			return nil, err
		}
		if err := Final(wire.OptSetMetaContext, rs); err != nil {
			return nil, err
		}
		for _, r := range rs {
			if r.Type == wire.RepMetaContext && len(r.Data) >= 4 && string(r.Data[4:]) == wire.MetaContextBaseAllocation {
				c.MetaID = binary.BigEndian.Uint32(r.Data)
				c.MetaOK = true
			}
		}
	}
	if o.ExportName {
		if _, err := nc.Write(wire.AppendOption(nil, wire.OptExportName, []byte(o.Export))); err != nil {
			return nil, err
		}
		n := wire.ExportNameReplySize
		if !o.NoZeroes {
			n += wire.ExportNameZeroes
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("export name reply: %w", err)
		}
		c.Size = binary.BigEndian.Uint64(b)
		c.Flags = binary.BigEndian.Uint16(b[8:])
		return c, nil
	}
	rs, err := Option(nc, br, wire.OptGo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: o.Export, Infos: []uint16{wire.InfoBlockSize}}))
	if err != nil {
		return nil, err
	}
	if err := Final(wire.OptGo, rs); err != nil {
		return nil, err
	}
	gotExport := false
	for _, r := range rs {
		if r.Type != wire.RepInfo || len(r.Data) < 2 {
			continue
		}
		switch binary.BigEndian.Uint16(r.Data) {
		case wire.InfoExport:
			if len(r.Data) != 12 {
				return nil, fmt.Errorf("NBD_INFO_EXPORT of %d bytes", len(r.Data))
			}
			c.Size = binary.BigEndian.Uint64(r.Data[2:])
			c.Flags = binary.BigEndian.Uint16(r.Data[10:])
			gotExport = true
		case wire.InfoBlockSize:
			if len(r.Data) != 14 {
				return nil, fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes", len(r.Data))
			}
			for i := range c.BlockSizes {
				c.BlockSizes[i] = binary.BigEndian.Uint32(r.Data[2+4*i:])
			}
		}
	}
	if !gotExport {
		return nil, errors.New("GO succeeded without NBD_INFO_EXPORT")
	}
	return c, nil
}

// Close closes the connection without NBD_CMD_DISC.
func (c *Conn) Close() error { return c.nc.Close() }

// Raw returns the underlying connection (for malformed-input tests).
func (c *Conn) Raw() net.Conn { return c.nc }

// Disconnect sends NBD_CMD_DISC and waits for the server to close.
func (c *Conn) Disconnect() error {
	c.wm.Lock()
	_, err := c.nc.Write(wire.AppendRequest(nil, wire.Request{Type: wire.CmdDisc, Handle: ^uint64(0)}))
	c.wm.Unlock()
	if err != nil {
		c.nc.Close()
		return err
	}
	// The server closes after finishing in-flight requests.
	_, err = io.Copy(io.Discard, c.br)
	c.nc.Close()
	return err
}

// Send sends a request (with payload for WRITE) and returns its handle.
func (c *Conn) Send(r wire.Request, payload []byte) (uint64, error) {
	c.mu.Lock()
	c.handle++
	r.Handle = c.handle
	c.pending[r.Handle] = r
	c.mu.Unlock()
	b := wire.AppendRequest(make([]byte, 0, wire.RequestSize+len(payload)), r)
	b = append(b, payload...)
	c.wm.Lock()
	defer c.wm.Unlock()
	_, err := c.nc.Write(b)
	return r.Handle, err
}

// SendRaw writes bytes as they are.
func (c *Conn) SendRaw(b []byte) error {
	c.wm.Lock()
	defer c.wm.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// Reply is a complete reply to one request.
type Reply struct {
	Handle  uint64
	Err     error // *Error when the server reported one
	Data    []byte
	Holes   int // OFFSET_HOLE chunks in a structured read reply
	Chunks  int // content chunks in a structured read reply
	Extents []wire.Extent
	Simple  bool
}

// Recv reads the next complete reply (all chunks of one structured reply;
// chunks of different requests may interleave). Call it from one goroutine.
func (c *Conn) Recv() (*Reply, error) {
	partial := c.partial
	for {
		var m [4]byte
		if _, err := io.ReadFull(c.br, m[:]); err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(m[:]) {
		case wire.MagicSimpleReply:
			var rest [12]byte
			if _, err := io.ReadFull(c.br, rest[:]); err != nil {
				return nil, err
			}
			errno := binary.BigEndian.Uint32(rest[:])
			h := binary.BigEndian.Uint64(rest[4:])
			req, ok := c.take(h)
			if !ok {
				return nil, fmt.Errorf("simple reply for unknown handle %d", h)
			}
			rep := &Reply{Handle: h, Simple: true}
			if errno != 0 {
				rep.Err = &Error{Errno: errno}
				return rep, nil
			}
			if req.Type == wire.CmdRead {
				if c.Structured {
					return nil, errors.New("simple reply to READ with structured replies negotiated")
				}
				rep.Data = make([]byte, req.Length)
				if _, err := io.ReadFull(c.br, rep.Data); err != nil {
					return nil, err
				}
			}
			return rep, nil
		case wire.MagicStructuredReply:
			if !c.Structured {
				return nil, errors.New("structured reply not negotiated")
			}
			var hb [wire.StructuredHeaderSize]byte
			copy(hb[:], m[:])
			if _, err := io.ReadFull(c.br, hb[4:]); err != nil {
				return nil, err
			}
			h, _ := wire.DecodeStructuredHeader(hb[:])
			if h.Length > 64<<20 {
				return nil, fmt.Errorf("chunk of %d bytes", h.Length)
			}
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(c.br, payload); err != nil {
				return nil, err
			}
			c.mu.Lock()
			req, ok := c.pending[h.Handle]
			c.mu.Unlock()
			if !ok {
				return nil, fmt.Errorf("chunk for unknown handle %d", h.Handle)
			}
			rep := partial[h.Handle]
			if rep == nil {
				rep = &Reply{Handle: h.Handle}
				if req.Type == wire.CmdRead {
					rep.Data = make([]byte, req.Length)
				}
				partial[h.Handle] = rep
			}
			if err := c.chunk(req, rep, h, payload); err != nil {
				return nil, err
			}
			if h.Flags&wire.ReplyFlagDone != 0 {
				c.take(h.Handle)
				delete(partial, h.Handle)
				return rep, nil
			}
		default:
			return nil, fmt.Errorf("bad reply magic %x", m)
		}
	}
}

func (c *Conn) take(h uint64) (wire.Request, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.pending[h]
	delete(c.pending, h)
	return r, ok
}

func (c *Conn) chunk(req wire.Request, rep *Reply, h wire.StructuredHeader, p []byte) error {
	switch h.Type {
	case wire.ReplyTypeNone:
		if len(p) != 0 || h.Flags&wire.ReplyFlagDone == 0 {
			return errors.New("bad NONE chunk")
		}
	case wire.ReplyTypeOffsetData, wire.ReplyTypeOffsetHole:
		if req.Type != wire.CmdRead || len(p) < 9 {
			return fmt.Errorf("content chunk type %d for %s", h.Type, wire.CommandName(req.Type))
		}
		off := binary.BigEndian.Uint64(p)
		var n uint64
		if h.Type == wire.ReplyTypeOffsetData {
			n = uint64(len(p) - 8)
		} else {
			if len(p) != 12 {
				return errors.New("hole chunk length != 12")
			}
			n = uint64(binary.BigEndian.Uint32(p[8:]))
			if n == 0 {
				return errors.New("empty hole")
			}
			rep.Holes++
		}
		if off < req.Offset || off+n > req.Offset+uint64(req.Length) {
			return fmt.Errorf("chunk [%d,+%d) outside request [%d,+%d)", off, n, req.Offset, req.Length)
		}
		if req.Flags&wire.CmdFlagDF != 0 && rep.Chunks > 0 {
			return errors.New("more than one content chunk with DF")
		}
		rep.Chunks++
		if h.Type == wire.ReplyTypeOffsetData {
			copy(rep.Data[off-req.Offset:], p[8:])
		} else {
			clear(rep.Data[off-req.Offset : off-req.Offset+n])
		}
	case wire.ReplyTypeBlockStatus:
		if req.Type != wire.CmdBlockStatus {
			return errors.New("block status chunk for another command")
		}
		id, ext, err := wire.ParseBlockStatus(p)
		if err != nil {
			return err
		}
		if id != c.MetaID {
			return fmt.Errorf("context id %d, negotiated %d", id, c.MetaID)
		}
		var sum uint64
		for i, e := range ext {
			if e.Length == 0 {
				return errors.New("zero-length extent")
			}
			if i < len(ext)-1 {
				sum += uint64(e.Length)
			}
		}
		if len(ext) > 1 && sum >= uint64(req.Length) {
			return errors.New("extents past the requested length")
		}
		if req.Flags&wire.CmdFlagReqOne != 0 && (len(ext) != 1 || ext[0].Length > req.Length) {
			return fmt.Errorf("REQ_ONE answered with %v", ext)
		}
		rep.Extents = ext
	default:
		if h.Type&(1<<15) == 0 {
			return fmt.Errorf("unknown chunk type %d", h.Type)
		}
		errno, msg, err := wire.ParseErrorChunk(p)
		if err != nil {
			return err
		}
		if errno == 0 {
			return errors.New("error chunk with error 0")
		}
		rep.Err = &Error{Errno: errno, Msg: msg}
	}
	return nil
}

// Do sends one request and waits for its reply (no other request may be
// in flight).
func (c *Conn) Do(r wire.Request, payload []byte) (*Reply, error) {
	if _, err := c.Send(r, payload); err != nil {
		return nil, err
	}
	return c.Recv()
}

// Read reads n bytes at off.
func (c *Conn) Read(off uint64, n uint32) ([]byte, error) {
	rep, err := c.Do(wire.Request{Type: wire.CmdRead, Offset: off, Length: n}, nil)
	if err != nil {
		return nil, err
	}
	return rep.Data, rep.Err
}

// Write writes p at off.
func (c *Conn) Write(off uint64, p []byte, flags uint16) error {
	rep, err := c.Do(wire.Request{Type: wire.CmdWrite, Flags: flags, Offset: off, Length: uint32(len(p))}, p)
	if err != nil {
		return err
	}
	return rep.Err
}

// Cmd runs a request without payload and returns the server's error.
func (c *Conn) Cmd(typ, flags uint16, off uint64, n uint32) error {
	rep, err := c.Do(wire.Request{Type: typ, Flags: flags, Offset: off, Length: n}, nil)
	if err != nil {
		return err
	}
	return rep.Err
}

// BlockStatus queries base:allocation.
func (c *Conn) BlockStatus(off uint64, n uint32, flags uint16) ([]wire.Extent, error) {
	rep, err := c.Do(wire.Request{Type: wire.CmdBlockStatus, Flags: flags, Offset: off, Length: n}, nil)
	if err != nil {
		return nil, err
	}
	return rep.Extents, rep.Err
}
