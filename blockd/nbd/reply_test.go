package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// slowWriter records writes and sometimes stalls, so replies pile up
// behind the writer and get batched.
type slowWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	rng    *rand.Rand
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.rng.Intn(4) == 0 {
		time.Sleep(50 * time.Microsecond)
	}
	return w.buf.Write(p)
}

// Replies from many goroutines, small and large, come out whole: the
// stream parses as a sequence of complete records, each exactly once.
func TestReplyWriterWholeReplies(t *testing.T) {
	w := &slowWriter{rng: rand.New(rand.NewSource(1))}
	rw := newReplyWriter(w)
	const senders, each = 16, 300
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(s)))
			for i := 0; i < each; i++ {
				// Record: 4-byte id, 4-byte body length, body of the id's
				// low byte. Big bodies exercise the in-place path.
				n := rng.Intn(2000)
				if rng.Intn(10) == 0 {
					n = replyCopyMax + rng.Intn(100000)
				}
				id := uint32(s*each + i)
				hdr := binary.BigEndian.AppendUint32(nil, id)
				hdr = binary.BigEndian.AppendUint32(hdr, uint32(n))
				body := bytes.Repeat([]byte{byte(id)}, n)
				if err := rw.send(hdr, body[:n/2], body[n/2:]); err != nil {
					t.Error(err)
					return
				}
			}
		}(s)
	}
	wg.Wait()
	if err := rw.flush(); err != nil {
		t.Fatal(err)
	}
	b := w.buf.Bytes()
	seen := map[uint32]bool{}
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("truncated record header")
		}
		id := binary.BigEndian.Uint32(b)
		n := int(binary.BigEndian.Uint32(b[4:]))
		if len(b) < 8+n || !bytes.Equal(b[8:8+n], bytes.Repeat([]byte{byte(id)}, n)) {
			t.Fatalf("record %d interleaved or truncated", id)
		}
		if seen[id] {
			t.Fatalf("record %d twice", id)
		}
		seen[id] = true
		b = b[8+n:]
	}
	if len(seen) != senders*each {
		t.Fatalf("%d records, want %d", len(seen), senders*each)
	}
	t.Logf("%d replies in %d writes", senders*each, w.writes)
	if w.writes >= senders*each {
		t.Errorf("no batching: %d writes for %d replies", w.writes, senders*each)
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, errors.New("broken pipe") }

func TestReplyWriterError(t *testing.T) {
	rw := newReplyWriter(failWriter{})
	if err := rw.send([]byte("x")); err == nil {
		t.Fatal("no error from a failing writer")
	}
	if err := rw.send(make([]byte, 1<<20)); err == nil {
		t.Fatal("no sticky error")
	}
}
