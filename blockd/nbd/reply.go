package nbd

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

const (
	replyBufSize   = 256 << 10 // coalescing buffer for small replies
	replyCopyMax   = 32 << 10  // parts up to this size are copied, larger ones written in place
	replyFlushSize = replyBufSize / 2
)

// replyWriter serializes the replies of one connection. Every reply is
// written whole (its parts never interleave with another reply's).
//
// Small parts are copied into a buffer that is written when no other reply
// is waiting for the lock, so replies finishing together share one write
// call while a lone reply is never delayed. A reply with a large part is
// written before send returns (with writev where the connection has it),
// so callers may reuse their buffers as soon as send returns.
type replyWriter struct {
	pending atomic.Int32 // replies between send's start and its lock release

	mu  sync.Mutex
	w   io.Writer
	buf []byte
	vec net.Buffers
	err error
}

func newReplyWriter(w io.Writer) *replyWriter {
	return &replyWriter{w: w, buf: make([]byte, 0, replyBufSize)}
}

// reset points the writer at a new stream (after STARTTLS).
func (rw *replyWriter) reset(w io.Writer) {
	rw.mu.Lock()
	rw.w = w
	rw.buf = rw.buf[:0]
	rw.err = nil
	rw.mu.Unlock()
}

// send writes one reply made of parts. It returns the first write error of
// the connection; after an error every send fails at once.
func (rw *replyWriter) send(parts ...[]byte) error {
	rw.pending.Add(1)
	rw.mu.Lock()
	defer rw.mu.Unlock()
	last := rw.pending.Add(-1) == 0
	if rw.err != nil {
		return rw.err
	}
	queued := 0 // rw.buf[:queued] is already referenced by vec
	vec := rw.vec[:0]
	for _, p := range parts {
		if len(p) <= replyCopyMax && len(rw.buf)+len(p) <= cap(rw.buf) {
			rw.buf = append(rw.buf, p...)
			continue
		}
		if len(rw.buf) > queued {
			vec = append(vec, rw.buf[queued:])
			queued = len(rw.buf)
		}
		vec = append(vec, p)
	}
	switch {
	case len(vec) > 0:
		if len(rw.buf) > queued {
			vec = append(vec, rw.buf[queued:])
		}
		nb := vec
		_, rw.err = nb.WriteTo(rw.w)
		clear(vec)
		rw.vec = vec[:0]
		rw.buf = rw.buf[:0]
	case last || len(rw.buf) >= replyFlushSize:
		_, rw.err = rw.w.Write(rw.buf)
		rw.buf = rw.buf[:0]
	}
	return rw.err
}

// flush writes anything buffered.
func (rw *replyWriter) flush() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err == nil && len(rw.buf) > 0 {
		_, rw.err = rw.w.Write(rw.buf)
		rw.buf = rw.buf[:0]
	}
	return rw.err
}
