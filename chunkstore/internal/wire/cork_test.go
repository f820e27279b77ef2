package wire

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cork"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"cork"}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// TestCorkedFramesOverTLS: a frame written corked reaches the TCP
// connection under TLS in a few writes instead of one per TLS record, and
// arrives intact; uncorked frames and TLS's own writes (the handshake)
// still go through at once.
func TestCorkedFramesOverTLS(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	count := &countingConn{Conn: a}
	cork := NewCorkConn(count)
	srv := tls.Server(cork, &tls.Config{Certificates: []tls.Certificate{testCert(t)}})
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true})

	payload := make([]byte, 512<<10)
	rand.Read(payload)
	type result struct {
		frames []Frame
		err    error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		for range 3 {
			f, _, err := ReadFrame(cli, nil)
			if err != nil {
				r.err = err
				break
			}
			r.frames = append(r.frames, f)
		}
		got <- r
	}()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	before := count.writes.Load()
	if err := WriteFrameCorked(srv, cork, TypeOK, 1, payload[:100], payload[100:]); err != nil {
		t.Fatal(err)
	}
	corked := count.writes.Load() - before
	before = count.writes.Load()
	if err := WriteFrameTo(srv, TypeOK, 2, payload); err != nil {
		t.Fatal(err)
	}
	uncorked := count.writes.Load() - before
	if err := WriteFrameCorked(srv, cork, TypeOK, 3); err != nil { // a header alone
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	for i, f := range r.frames {
		want := payload
		if i == 2 {
			want = nil
		}
		if f.ID != uint32(i+1) || !bytes.Equal(f.Payload, want) {
			t.Fatalf("frame %d: id %d, %d bytes: not what was sent", i, f.ID, len(f.Payload))
		}
	}
	// 512 KiB is 33 TLS records (and the header one more).
	if corked > 3 {
		t.Errorf("a corked 512 KiB frame took %d writes, want at most 3", corked)
	}
	if uncorked < 30 {
		t.Errorf("an uncorked 512 KiB frame took %d writes: the count is wrong", uncorked)
	}
}

// TestCorkConcurrentWrites: writes through a CorkConn from a corked writer
// and an uncorked one at the same time each arrive whole.
func TestCorkConcurrentWrites(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cork := NewCorkConn(a)
	const rounds, block = 200, 1000
	read := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		read <- all
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range rounds {
			cork.Cork()
			for range 3 {
				cork.Write(bytes.Repeat([]byte{'a' + byte(i%20)}, block))
			}
			if err := cork.Uncork(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range rounds {
			cork.Write([]byte("B"))
		}
	})
	wg.Wait()
	a.Close()
	all := <-read
	if len(all) != rounds*(3*block+1) {
		t.Fatalf("read %d bytes, want %d", len(all), rounds*(3*block+1))
	}
	for i := 0; i < len(all); {
		if all[i] == 'B' {
			i++
			continue
		}
		if i+block > len(all) || !bytes.Equal(all[i:i+block], bytes.Repeat(all[i:i+1], block)) {
			t.Fatalf("a corked write was split at byte %d", i)
		}
		i += block
	}
}

// TestUncorkReportsWriteError: a write that fails while corked is reported
// by Uncork.
func TestUncorkReportsWriteError(t *testing.T) {
	a, b := net.Pipe()
	b.Close()
	cork := NewCorkConn(a)
	cork.Cork()
	if _, err := cork.Write([]byte("lost")); err != nil {
		t.Fatalf("a corked write failed before Uncork: %v", err)
	}
	if err := cork.Uncork(); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("Uncork: %v, want the write's error", err)
	}
}
