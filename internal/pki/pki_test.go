package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123456789abcdef"

func mustCA(t testing.TB, secret string) *CA {
	t.Helper()
	ca, err := NewCA("zos-test", secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func holder(t testing.TB, ca *CA, id string, ttl time.Duration, now time.Time) *Holder {
	t.Helper()
	h, err := NewHolder(ca.PEM(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if id != "" {
		cert, key, err := ca.Issue(Request{NodeID: id, IPs: []net.IP{net.ParseIP("10.0.0.5")}}, ttl, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Set(cert, key); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestDeriveKeyDeterministic(t *testing.T) {
	a, err := DeriveKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DeriveKey(secret)
	c, _ := DeriveKey(secret + "x")
	if !a.Equal(b) || a.Equal(c) {
		t.Fatal("derivation is not a function of the secret")
	}
	if _, err := DeriveKey("short"); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestLoadCA(t *testing.T) {
	ca := mustCA(t, secret)
	if _, err := LoadCA(ca.PEM(), secret); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(ca.PEM(), secret+"other"); !errors.Is(err, ErrWrongCA) {
		t.Fatalf("CA with another secret: %v", err)
	}
}

func TestSign(t *testing.T) {
	ca := mustCA(t, secret)
	_, csr, err := NewCSR(Request{NodeID: "liar", IPs: []net.IP{net.ParseIP("10.0.0.7")}, DNS: []string{"n7.example"}})
	if err != nil {
		t.Fatal(err)
	}
	pemCert, err := ca.Sign("n7", csr, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(pemCert)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "n7" || !IsNodeCert(c) {
		t.Fatalf("subject %v dns %v", c.Subject, c.DNSNames)
	}
	if err := c.VerifyHostname("10.0.0.7"); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyHostname("n7.example"); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.NotAfter); d > time.Hour || d < 59*time.Minute {
		t.Fatalf("validity %v", d)
	}
	for _, bad := range []string{"", "garbage", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
		string(pemCert), strings.Repeat("x", maxCSR+1)} {
		if _, err := ca.Sign("n7", []byte(bad), 0, time.Now()); !errors.Is(err, ErrBadRequest) {
			t.Errorf("Sign(%.30q) = %v, want ErrBadRequest", bad, err)
		}
	}
	if _, err := ca.Sign("", csr, 0, time.Now()); !errors.Is(err, ErrBadRequest) {
		t.Fatal("no node id accepted")
	}
}

func TestHolderSetRefusesOtherCA(t *testing.T) {
	ca, other := mustCA(t, secret), mustCA(t, secret+"-other")
	h := holder(t, ca, "", 0, time.Now())
	cert, key, _ := other.Issue(Request{NodeID: "x"}, 0, time.Now())
	if err := h.Set(cert, key); !errors.Is(err, ErrWrongCA) {
		t.Fatalf("Set(other CA) = %v", err)
	}
}

// handshake runs a TLS handshake between a client and a server config
// over a pipe and returns the server's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		c := tls.Client(b, client)
		err := c.Handshake()
		if err == nil {
			// TLS 1.3: the server's verdict on our certificate arrives
			// after our side of the handshake.
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Read(make([]byte, 1))
		}
		b.Close()
		done <- err
	}()
	tc := Handshake(a, server, 5*time.Second, nil, "test")
	if tc != nil {
		tc.Write([]byte{1})
		tc.Close()
	}
	<-done
	if tc == nil {
		return errors.New("refused")
	}
	return nil
}

func TestPeerLinks(t *testing.T) {
	now := time.Now()
	ca, other := mustCA(t, secret), mustCA(t, secret+"-other")
	srv := holder(t, ca, "n1", 0, now)
	good := holder(t, ca, "n2", 0, now)
	if err := handshake(t, srv.PeerServerConfig(), good.PeerClientConfig()); err != nil {
		t.Fatalf("node to node: %v", err)
	}
	// No certificate.
	if err := handshake(t, srv.PeerServerConfig(), holder(t, ca, "", 0, now).PeerClientConfig()); err == nil {
		t.Fatal("client without a certificate accepted")
	}
	// Another CA's node certificate.
	if err := handshake(t, srv.PeerServerConfig(), holder(t, other, "n9", 0, now).PeerClientConfig()); err == nil {
		t.Fatal("client of another CA accepted")
	}
	// Expired.
	if err := handshake(t, srv.PeerServerConfig(), holder(t, ca, "old", time.Hour, now.Add(-3*time.Hour)).PeerClientConfig()); err == nil {
		t.Fatal("expired client certificate accepted")
	}
	// Self-signed certificate.
	self := mustCA(t, "self-signed-secret-123456")
	selfCert, _ := tls.X509KeyPair(self.PEM(), nil)
	_ = selfCert
	key, _ := DeriveKey("self-signed-secret-123456")
	cfg := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{{Certificate: [][]byte{self.Cert.Raw}, PrivateKey: key}}}
	if err := handshake(t, srv.PeerServerConfig(), cfg); err == nil {
		t.Fatal("self-signed client certificate accepted")
	}
	// A client of this node's CA refuses a server of another CA.
	if err := handshake(t, holder(t, other, "n9", 0, now).PeerServerConfig(), good.PeerClientConfig()); err == nil {
		t.Fatal("server of another CA accepted by the client")
	}
}

func TestRotationTakesEffect(t *testing.T) {
	ca := mustCA(t, secret)
	h := holder(t, ca, "n1", 0, time.Now())
	first := h.Leaf().SerialNumber
	cert, key, _ := ca.Issue(Request{NodeID: "n1"}, 0, time.Now())
	if err := h.Set(cert, key); err != nil {
		t.Fatal(err)
	}
	got, _ := h.getCertificate(nil)
	if got.Leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatal("old certificate still served")
	}
}

func TestSaveLoad(t *testing.T) {
	ca := mustCA(t, secret)
	cert, key, _ := ca.Issue(Request{NodeID: "n1"}, 0, time.Now())
	dir := t.TempDir()
	if err := Save(dir, ca.PEM(), cert, key); err != nil {
		t.Fatal(err)
	}
	c, ce, k, err := Load(dir)
	if err != nil || string(c) != string(ca.PEM()) || string(ce) != string(cert) || string(k) != string(key) {
		t.Fatalf("Load: %v", err)
	}
}

func FuzzParseCSR(f *testing.F) {
	_, csr, _ := NewCSR(Request{NodeID: "n1", IPs: []net.IP{net.ParseIP("10.1.2.3")}})
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"))
	ca := mustCA(f, secret)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseCSR(b); err != nil {
			return
		}
		if _, err := ca.Sign("n1", b, time.Hour, time.Now()); err != nil {
			t.Fatalf("ParseCSR accepted what Sign refuses: %v", err)
		}
	})
}
