package console

import (
	"errors"
	"io"
	"os"
	"sync"
)

// ErrClosed is returned by a following Reader once its Log is closed and
// every byte has been read, and by Write on a closed Log.
var ErrClosed = errors.New("console: log closed")

// Log is a bounded, rotating log file. See the package doc.
type Log struct {
	path string
	cap  int64

	mu     sync.Mutex
	f      *os.File
	size   int64
	gen    uint64        // rotations so far (in this process)
	wake   chan struct{} // closed and replaced on every write, rotation and Close
	closed bool
}

// Open opens (creating or appending to) the log at path with a total cap of
// capBytes on disk (at least 2 bytes; 1 MiB if 0).
func Open(path string, capBytes int64) (*Log, error) {
	if capBytes == 0 {
		capBytes = 1 << 20
	}
	if capBytes < 2 {
		return nil, errors.New("console: cap must be at least 2 bytes")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Log{path: path, cap: capBytes, f: f, size: st.Size(), wake: make(chan struct{})}, nil
}

// Path is the current file's path (the previous one is Path()+".1").
func (l *Log) Path() string { return l.path }

// Write appends p, rotating first if the current file would pass Cap/2.
// A p longer than Cap/2 keeps only its last Cap/2 bytes.
func (l *Log) Write(p []byte) (int, error) {
	n := len(p)
	half := l.cap / 2
	if int64(len(p)) > half {
		p = p[int64(len(p))-half:]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	if l.size+int64(len(p)) > half {
		if err := l.rotateLocked(); err != nil {
			return 0, err
		}
	}
	w, err := l.f.Write(p)
	l.size += int64(w)
	l.notifyLocked()
	if err != nil {
		return w, err
	}
	return n, nil
}

func (l *Log) rotateLocked() error {
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.f.Close()
	l.f, l.size = f, 0
	l.gen++
	return nil
}

func (l *Log) notifyLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// Close stops the log; following readers drain and then return ErrClosed
// (io.EOF for non-following readers is unaffected).
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.notifyLocked()
	return l.f.Close()
}

// Reader returns a reader positioned at the oldest kept byte. With follow
// it blocks at the end for more bytes until Close (of the reader or the
// log); without, it returns io.EOF at the end.
func (l *Log) Reader(follow bool) *Reader {
	r := &Reader{l: l, follow: follow, done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, err := os.Open(l.path + ".1"); err == nil {
		r.prev = f
	}
	if f, err := os.Open(l.path); err == nil {
		r.cur, r.gen = f, l.gen
	}
	return r
}

// Reader reads a Log; see Log.Reader. Not safe for concurrent Reads; Close
// may be called from another goroutine to stop a blocked Read.
type Reader struct {
	l      *Log
	follow bool
	done   chan struct{}
	once   sync.Once

	mu   sync.Mutex // held by Read except while it waits; Close takes it to close the files
	prev *os.File   // NAME.1 as it was when the reader started, read first
	cur  *os.File
	gen  uint64 // generation of cur
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		select {
		case <-r.done:
			return 0, io.EOF
		default:
		}
		if r.prev != nil {
			n, err := r.prev.Read(p)
			if n > 0 {
				return n, nil
			}
			r.prev.Close()
			r.prev = nil
			if err != nil && err != io.EOF {
				return 0, err
			}
		}
		r.l.mu.Lock()
		gen, wake, closed := r.l.gen, r.l.wake, r.l.closed
		if r.cur == nil {
			// Opened under the log's lock so that r.gen names the file opened.
			f, err := os.Open(r.l.path)
			if err != nil {
				r.l.mu.Unlock()
				return 0, err
			}
			r.cur, r.gen = f, gen
		}
		r.l.mu.Unlock()
		n, err := r.cur.Read(p)
		if n > 0 {
			return n, nil
		}
		if err != nil && err != io.EOF {
			return 0, err
		}
		if gen != r.gen {
			// The file we read was rotated away and is complete: move to the
			// current one. (More than one rotation means the reader lagged by
			// more than Cap/2: the bytes in between are gone.)
			r.cur.Close()
			r.cur = nil
			continue
		}
		if !r.follow {
			return 0, io.EOF
		}
		if closed {
			return 0, ErrClosed
		}
		r.mu.Unlock()
		select {
		case <-wake:
		case <-r.done:
		}
		r.mu.Lock()
	}
}

// Close releases the reader and wakes a blocked Read.
func (r *Reader) Close() error {
	r.once.Do(func() { close(r.done) })
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range []*os.File{r.prev, r.cur} {
		if f != nil {
			f.Close()
		}
	}
	r.prev, r.cur = nil, nil
	return nil
}
