package nbd

import (
	"io"
	"net"
	"sync"
)

const (
	replyBufSize = 128 << 10 // bound of the pending buffer (allocated as it fills)
	replyCopyMax = 32 << 10  // parts up to this size are copied, larger ones written in place
)

// replyWriter serializes the replies of one connection; every reply is
// written whole, never interleaved with another.
//
// It batches by combining: a worker appends its small reply to a pending
// buffer; if no write is in progress it becomes the writer and writes the
// buffer at once (a lone reply is never delayed). Workers whose replies
// arrive while a write is in progress only append and return; the writer,
// back from its write, writes everything that accumulated in one call, and
// so on until the buffer is empty. Under load one write carries many
// replies and no worker ever waits for another's system call.
//
// A reply with a large part (READ data) is not copied: its worker waits to
// become the writer and writes the pending buffer and its parts with one
// writev, so the caller may reuse its buffers as soon as send returns.
type replyWriter struct {
	mu         sync.Mutex
	cond       sync.Cond // writer role released or buffer space freed
	w          io.Writer
	buf        []byte // pending replies
	spare      []byte // the other buffer, swapped in while buf is written
	writing    bool   // a goroutine holds the writer role
	bigWaiting int    // senders of large replies waiting for the role
	vec        net.Buffers
	err        error
}

func newReplyWriter(w io.Writer) *replyWriter {
	rw := &replyWriter{w: w}
	rw.cond.L = &rw.mu
	return rw
}

// reset points the writer at a new stream (after STARTTLS; nothing is in
// flight then).
func (rw *replyWriter) reset(w io.Writer) {
	rw.mu.Lock()
	rw.w = w
	rw.buf = rw.buf[:0]
	rw.err = nil
	rw.mu.Unlock()
}

// send writes one reply made of parts. It returns the connection's first
// write error; after an error every send fails at once. A small reply may
// still be in the pending buffer when send returns; it is written by the
// current writer before that writer gives up its role.
func (rw *replyWriter) send(parts ...[]byte) error {
	total, big := 0, false
	for _, p := range parts {
		total += len(p)
		if len(p) > replyCopyMax {
			big = true
		}
	}
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if !big && total <= replyBufSize {
		// Wait for room (the writer is busy and the buffer full).
		for rw.err == nil && len(rw.buf)+total > replyBufSize {
			rw.cond.Wait()
		}
		if rw.err != nil {
			return rw.err
		}
		for _, p := range parts {
			rw.buf = append(rw.buf, p...)
		}
		if rw.writing {
			return nil // the writer will take it
		}
		rw.writing = true
		rw.writeLoop()
		rw.release()
		return rw.err
	}

	rw.bigWaiting++
	for rw.writing && rw.err == nil {
		rw.cond.Wait()
	}
	rw.bigWaiting--
	if rw.err != nil {
		return rw.err
	}
	rw.writing = true
	vec := rw.vec[:0]
	pending := rw.buf
	if len(pending) > 0 {
		vec = append(vec, pending)
		rw.buf = rw.spare[:0]
	}
	vec = append(vec, parts...)
	rw.mu.Unlock()
	nb := vec
	_, err := nb.WriteTo(rw.w)
	rw.mu.Lock()
	clear(vec)
	rw.vec = vec[:0]
	if len(pending) > 0 {
		rw.spare = pending[:0]
	}
	if err != nil && rw.err == nil {
		rw.err = err
	}
	rw.writeLoop()
	rw.release()
	return rw.err
}

// writeLoop writes the pending buffer until it stays empty (or a large
// reply waits for the role). Called with mu held and the writer role; mu is
// released during each write.
func (rw *replyWriter) writeLoop() {
	for len(rw.buf) > 0 && rw.err == nil && rw.bigWaiting == 0 {
		out := rw.buf
		rw.buf = rw.spare[:0]
		rw.cond.Broadcast() // room for senders waiting on a full buffer
		rw.mu.Unlock()
		_, err := rw.w.Write(out)
		rw.mu.Lock()
		rw.spare = out[:0]
		if err != nil && rw.err == nil {
			rw.err = err
		}
	}
}

// release gives up the writer role. If the buffer is not empty (a large
// reply is waiting), that waiter becomes the writer and writes it.
func (rw *replyWriter) release() {
	rw.writing = false
	rw.cond.Broadcast()
}

// flush writes anything pending and waits for the writer to finish.
func (rw *replyWriter) flush() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	for rw.writing && rw.err == nil {
		rw.cond.Wait()
	}
	if rw.err == nil && len(rw.buf) > 0 {
		rw.writing = true
		rw.writeLoop()
		rw.release()
	}
	return rw.err
}
