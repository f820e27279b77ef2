package raft

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/zosproject/zos/internal/pki"
)

// tlsStream is a hraft.StreamLayer over mutual TLS. Accept hands the
// transport only connections whose handshake succeeded (a peer without a
// valid certificate never reaches Raft's decoder); handshakes run in their
// own goroutines, so a peer that stalls one delays nobody, and refusals are
// logged here, with the peer's address, instead of becoming Accept errors
// (on which the transport would back off for everyone).
type tlsStream struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	timeout   time.Duration
	log       *slog.Logger

	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// maxPendingHandshakes bounds the handshakes in progress at once; more
// connections wait in the kernel's accept queue.
const maxPendingHandshakes = 64

func newTLSStream(ln net.Listener, advertise net.Addr, server, client *tls.Config, log *slog.Logger) *tlsStream {
	s := &tlsStream{ln: ln, advertise: advertise, server: server, client: client, timeout: 10 * time.Second,
		log: log.With("link", "raft"), conns: make(chan net.Conn), closed: make(chan struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *tlsStream) acceptLoop() {
	defer s.wg.Done()
	sem := make(chan struct{}, maxPendingHandshakes)
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("raft accept", "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		select {
		case sem <- struct{}{}:
		case <-s.closed:
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-sem }()
			tc := tls.Server(c, s.server)
			c.SetDeadline(time.Now().Add(s.timeout))
			if err := tc.Handshake(); err != nil {
				if errors.Is(err, pki.ErrNoCert) {
					s.log.Info("Raft connection refused until this node has its certificate", "peer", c.RemoteAddr().String())
				} else {
					s.log.Warn("TLS handshake refused: peer has no valid node certificate of this cluster", "peer", c.RemoteAddr().String(), "err", err)
				}
				c.Close()
				return
			}
			c.SetDeadline(time.Time{})
			select {
			case s.conns <- tc:
			case <-s.closed:
				tc.Close()
			}
		}()
	}
}

// Accept implements net.Listener.
func (s *tlsStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (s *tlsStream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.ln.Close()
	})
	return err
}

// Addr implements net.Listener: the advertised address.
func (s *tlsStream) Addr() net.Addr { return s.advertise }

// Dial implements hraft.StreamLayer.
func (s *tlsStream) Dial(address hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, s.client)
	c.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		s.log.Warn("TLS handshake with a Raft peer failed", "peer", string(address), "err", err)
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return tc, nil
}
