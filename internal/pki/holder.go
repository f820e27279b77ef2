package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Files under a node's TLS directory.
const (
	CAFile   = "ca.pem"
	CertFile = "node.pem"
	KeyFile  = "node-key.pem"
)

// Holder is a node's TLS identity: the cluster CA and the current node
// certificate. It is safe for concurrent use; Set replaces the certificate
// for every later handshake.
type Holder struct {
	ca   *x509.Certificate
	pool *x509.CertPool
	cur  atomic.Pointer[tls.Certificate]
	log  *slog.Logger
}

// NewHolder returns a Holder trusting the CA certificate caPEM, with no
// node certificate yet (handshakes fail until Set).
func NewHolder(caPEM []byte, log *slog.Logger) (*Holder, error) {
	ca, err := ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, errors.New("pki: CA certificate is not a CA")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := x509.NewCertPool()
	p.AddCert(ca)
	return &Holder{ca: ca, pool: p, log: log}, nil
}

// CA returns the CA certificate.
func (h *Holder) CA() *x509.Certificate { return h.ca }

// Pool returns a pool holding the CA.
func (h *Holder) Pool() *x509.CertPool { return h.pool }

// Set installs a node certificate (PEM certificate and key). It must be a
// node certificate of the held CA (expired is allowed: see Renew).
func (h *Holder) Set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("pki: node certificate: %w", err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return err
		}
		c.Leaf = leaf
	}
	// The chain, not the time: an expired certificate loaded at start is
	// installed and renewed at once.
	if err := leaf.CheckSignatureFrom(h.ca); err != nil {
		return fmt.Errorf("%w: %v", ErrWrongCA, err)
	}
	h.cur.Store(&c)
	return nil
}

// Leaf returns the current node certificate (nil before Set).
func (h *Holder) Leaf() *x509.Certificate {
	if c := h.cur.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// ErrNoCert is a handshake's error while the node waits for its first
// certificate (a joining node, for a moment): not the peer's fault.
var ErrNoCert = errors.New("pki: this node has no certificate yet")

func (h *Holder) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := h.cur.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCert
}

func (h *Holder) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := h.cur.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil // none: the server refuses us
}

// verifyNodePeer checks that a verified peer chain ends in a node
// certificate (not some other certificate of the CA).
func verifyNodePeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("pki: peer sent no certificate")
	}
	if !IsNodeCert(cs.PeerCertificates[0]) {
		return fmt.Errorf("pki: peer certificate %q is not a node certificate", cs.PeerCertificates[0].Subject.CommonName)
	}
	return nil
}

// PeerServerConfig is the server side of a link between nodes (Raft,
// shard protocol): TLS 1.3, a node certificate of this CA required.
func (h *Holder) PeerServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: h.getCertificate,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: h.pool, VerifyConnection: verifyNodePeer}
}

// PeerClientConfig is the client side of a link between nodes: it
// presents this node's certificate and accepts a server whose node
// certificate chains to the CA, whatever address it was dialed at.
func (h *Holder) PeerClientConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetClientCertificate: h.getClientCertificate,
		RootCAs: h.pool, ServerName: NodeName, VerifyConnection: verifyNodePeer}
}

// APIServerConfig serves the HTTP API (and hub, metrics, RESP): TLS 1.2+,
// a client certificate is optional but, when sent, must be a certificate
// of the CA (the handshake fails otherwise). Handlers of node-only routes
// check PeerIsNode.
func (h *Holder) APIServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: h.getCertificate,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: h.pool, NextProtos: []string{"h2", "http/1.1"}}
}

// PublicServerConfig serves clients that never authenticate with a
// certificate (NBD, RESP): TLS 1.2+ with the node certificate.
func (h *Holder) PublicServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: h.getCertificate}
}

// PeerIsNode reports whether a TLS connection's verified client
// certificate is a node certificate of the CA.
func PeerIsNode(cs *tls.ConnectionState) bool {
	return cs != nil && len(cs.VerifiedChains) > 0 && IsNodeCert(cs.VerifiedChains[0][0])
}

// Handshake runs the server side of a TLS handshake on c within timeout,
// logging a refusal with the peer's address. It returns the TLS
// connection, or nil (c closed) when the peer was refused.
func Handshake(c net.Conn, cfg *tls.Config, timeout time.Duration, log *slog.Logger, what string) *tls.Conn {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tc := tls.Server(c, cfg)
	c.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		level := slog.LevelWarn
		if errors.Is(err, ErrNoCert) {
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "TLS handshake refused", "link", what, "peer", c.RemoteAddr().String(), "err", err)
		c.Close()
		return nil
	}
	c.SetDeadline(time.Time{})
	return tc
}

// Expiry returns the seconds until the current certificate expires
// (negative once expired, 0 without one).
func (h *Holder) Expiry(now time.Time) float64 {
	if l := h.Leaf(); l != nil {
		return l.NotAfter.Sub(now).Seconds()
	}
	return 0
}

// Save writes the CA certificate, a node certificate and its key into dir
// (each crash-safely).
func Save(dir string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{CAFile, caPEM, 0o644}, {KeyFile, keyPEM, 0o600}, {CertFile, certPEM, 0o644}} {
		if f.data == nil {
			continue
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("pki: save %s: %w", f.name, err)
		}
	}
	return nil
}

// Load reads what Save wrote. A missing node certificate returns nil
// certPEM and keyPEM (the CA alone may be there).
func Load(dir string) (caPEM, certPEM, keyPEM []byte, err error) {
	caPEM, err = os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM, err = os.ReadFile(filepath.Join(dir, CertFile))
	if errors.Is(err, os.ErrNotExist) {
		return caPEM, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err = os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, nil, err
	}
	return caPEM, certPEM, keyPEM, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
