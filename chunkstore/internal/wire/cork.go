package wire

import (
	"io"
	"net"
	"sync"
)

// CorkConn is a net.Conn (the TCP connection under a shard link's TLS)
// whose writes between Cork and Uncork are gathered and sent in writes of
// up to corkFlush bytes. Outside Cork it writes through.
//
// TLS sends every record, at most 16 KiB, with a write of its own, and a
// frame's header with another. On loopback and on fast links the cost of
// a write (a TCP push, the peer woken to read it) rather than of its
// bytes is most of the link's CPU: a 512 KiB frame is 33 writes uncorked,
// 2 corked (figures in docs/benchmarks.md, "Corked TLS writes").
//
// Cork only once the TLS handshake is done: a handshake message gathered
// would wait for an Uncork that waits for the peer's answer to it.
//
// CorkConn is safe for concurrent use: writes are sent in the order of
// the Write calls, which TLS serialises record by record (a record TLS
// writes on its own, as a key update answered from the read side, joins
// the gathered bytes or is written through after them).
type CorkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    *[]byte // gathered bytes while corked (from corkBufs)
}

// corkFlush: gathered bytes past this are sent at once.
const corkFlush = 256 << 10

var corkBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, corkFlush+20<<10) // room for one more TLS record
	return &b
}}

// NewCorkConn wraps c.
func NewCorkConn(c net.Conn) *CorkConn { return &CorkConn{Conn: c} }

// Cork starts gathering writes.
func (c *CorkConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork sends what was gathered and writes through again. Its error is
// that of any write since Cork (the connection is then broken).
func (c *CorkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	err := c.flushLocked()
	if c.buf != nil {
		corkBufs.Put(c.buf)
		c.buf = nil
	}
	return err
}

func (c *CorkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = corkBufs.Get().(*[]byte)
	}
	if len(*c.buf)+len(p) > cap(*c.buf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*c.buf) {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= corkFlush {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *CorkConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// WriteFrameCorked is WriteFrameTo with cork, the connection under w's
// TLS (or nil: w has none), corked for the frame.
func WriteFrameCorked(w io.Writer, cork *CorkConn, typ byte, id uint32, parts ...[]byte) error {
	if cork == nil {
		return WriteFrameTo(w, typ, id, parts...)
	}
	cork.Cork()
	err := WriteFrameTo(w, typ, id, parts...)
	if uerr := cork.Uncork(); err == nil {
		err = uerr
	}
	return err
}
