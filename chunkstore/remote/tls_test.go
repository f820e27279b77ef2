package remote_test

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/remote"
	"github.com/zosproject/zos/chunkstore/shard"
	"github.com/zosproject/zos/internal/pki"
)

func tlsHolder(t *testing.T, ca *pki.CA, id string, ttl time.Duration, now time.Time) *pki.Holder {
	t.Helper()
	h, err := pki.NewHolder(ca.PEM(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if id != "" {
		cert, key, err := ca.Issue(pki.Request{NodeID: id}, ttl, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Set(cert, key); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// TestMutualTLS: over mutual TLS a node's client works; clients without a
// certificate, with one of another CA, expired, or speaking plaintext
// are refused before the secret handshake, and the server keeps serving.
func TestMutualTLS(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("c", "0123456789abcdef0123456789", now)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pki.NewCA("c", "another-secret-0123456789", now)
	srvH := tlsHolder(t, ca, "n1", 0, now)
	srv, _ := server(t, 40, shard.Config{TLS: srvH.PeerServerConfig()})
	addr := srv.Addr().String()

	good := client(t, addr, remote.Config{TLS: tlsHolder(t, ca, "n2", 0, now).PeerClientConfig()})
	if err := good.PutShards(ctx(t), shards(1, 4096, chunkstore.Profile{K: 2, M: 1})); err != nil {
		t.Fatalf("put over mutual TLS: %v", err)
	}
	for name, cfg := range map[string]*tls.Config{
		"no certificate": tlsHolder(t, ca, "", 0, now).PeerClientConfig(),
		"another CA":     tlsHolder(t, other, "n9", 0, now).PeerClientConfig(),
		"expired":        tlsHolder(t, ca, "old", time.Hour, now.Add(-3*time.Hour)).PeerClientConfig(),
		"plaintext":      nil,
	} {
		bad := client(t, addr, remote.Config{TLS: cfg, DialTimeout: 2 * time.Second})
		if err := bad.Ping(ctx(t)); err == nil {
			t.Errorf("%s: ping succeeded", name)
		} else if !errors.Is(err, chunkstore.ErrUnavailable) && !errors.Is(err, remote.ErrAuth) {
			t.Logf("%s: %v", name, err)
		}
	}
	// A truncated handshake: a few bytes of a ClientHello, then silence.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte{0x16, 0x03, 0x01, 0x00})
	raw.Close()
	if err := good.Ping(ctx(t)); err != nil {
		t.Fatalf("server broken after bad clients: %v", err)
	}
	// A client refuses a server of another CA.
	srv2, _ := server(t, 41, shard.Config{TLS: tlsHolder(t, other, "x", 0, now).PeerServerConfig()})
	c := client(t, srv2.Addr().String(), remote.Config{TLS: tlsHolder(t, ca, "n2", 0, now).PeerClientConfig()})
	if err := c.Ping(ctx(t)); err == nil {
		t.Fatal("server of another CA accepted")
	}
}
