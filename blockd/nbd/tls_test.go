package nbd_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/internal/wire"
	client "github.com/zosproject/zos/blockd/nbd/nbdclient"
)

// testPKI is a CA with a server certificate for 127.0.0.1/localhost and a
// client certificate, written as the files libnbd and qemu expect in a
// credentials directory (ca-cert.pem, client-cert.pem, client-key.pem).
type testPKI struct {
	dir        string // client credentials directory
	serverTLS  *tls.Config
	clientTLS  *tls.Config
	caPool     *x509.CertPool
	clientCert tls.Certificate
}

func newTestPKI(t testing.TB, requireClientCert bool) *testPKI {
	t.Helper()
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "zos test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c, certPEM, keyPEM
	}
	serverCert, _, _ := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	clientCert, clientPEM, clientKeyPEM := leaf(3, "zos-client", x509.ExtKeyUsageClientAuth)

	dir := t.TempDir()
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca-cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	write("client-cert.pem", clientPEM)
	write("client-key.pem", clientKeyPEM)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	p := &testPKI{
		dir:        dir,
		caPool:     pool,
		clientCert: clientCert,
		serverTLS:  &tls.Config{Certificates: []tls.Certificate{serverCert}},
		clientTLS:  &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{clientCert}},
	}
	if requireClientCert {
		p.serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
		p.serverTLS.ClientCAs = pool
	}
	return p
}

func TestTLSRequired(t *testing.T) {
	pki := newTestPKI(t, true)
	ts := startServer(t, nbd.Config{TLS: pki.serverTLS, RequireTLS: true})
	ts.addMem(t, "secure", 4*mib, nbd.ExportInfo{})

	// Before STARTTLS every option but STARTTLS/ABORT is refused.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
	for _, opt := range []uint32{wire.OptList, wire.OptGo, wire.OptInfo, wire.OptStructuredReply, 999} {
		data := []byte{}
		if opt == wire.OptGo || opt == wire.OptInfo {
			data = wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "secure"})
		}
		rs, err := client.Option(nc, br, opt, data)
		if finalType(t, rs, err) != wire.RepErrTLSReqd {
			t.Fatalf("%s before TLS: %+v", wire.OptionName(opt), rs)
		}
	}
	// EXPORT_NAME cannot be refused politely: the connection closes.
	nc.Write(wire.AppendOption(nil, wire.OptExportName, []byte("secure")))
	expectClosed(t, "EXPORT_NAME before TLS", nc)

	// A client without a certificate fails the handshake.
	noCert := pki.clientTLS.Clone()
	noCert.Certificates = nil
	if _, err := client.Dial(ts.addr, client.Options{Export: "secure", TLS: noCert}); err == nil {
		t.Fatal("TLS without client certificate accepted")
	}

	// With TLS everything works, structured replies included.
	c := ts.dial(t, client.Options{Export: "secure", TLS: pki.clientTLS, Structured: true, MetaAlloc: true})
	p := pattern(256<<10, 1)
	if err := c.Write(4096, p, wire.CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	got, err := c.Read(4096, uint32(len(p)))
	if err != nil || string(got) != string(p) {
		t.Fatalf("TLS read: %v", err)
	}
	if ext, err := c.BlockStatus(0, 4*mib, 0); err != nil || len(ext) < 2 {
		t.Fatalf("TLS block status %v %v", ext, err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
}

// TLS is optional when not required; a second STARTTLS is invalid and
// state negotiated before STARTTLS does not survive it.
func TestTLSOptional(t *testing.T) {
	pki := newTestPKI(t, false)
	ts := startServer(t, nbd.Config{TLS: pki.serverTLS})
	ts.addMem(t, "d", mib, nbd.ExportInfo{})
	plain := ts.dial(t, client.Options{Export: "d", Structured: true})
	if err := plain.Write(0, []byte("plain"), 0); err != nil {
		t.Fatal(err)
	}

	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
	rs, err := client.Option(nc, br, wire.OptStructuredReply, nil)
	finalType(t, rs, err)
	rs, err = client.Option(nc, br, wire.OptStartTLS, []byte{1})
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("STARTTLS with data: %+v", rs)
	}
	rs, err = client.Option(nc, br, wire.OptStartTLS, nil)
	if finalType(t, rs, err) != wire.RepAck {
		t.Fatalf("STARTTLS: %+v", rs)
	}
	tc := tls.Client(nc, pki.clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tbr := bufio.NewReader(tc)
	rs, err = client.Option(tc, tbr, wire.OptStartTLS, nil)
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("second STARTTLS: %+v", rs)
	}
	// STRUCTURED_REPLY was forgotten: meta contexts are refused.
	rs, err = client.Option(tc, tbr, wire.OptSetMetaContext, wire.AppendMetaContextRequest(nil, wire.MetaContextRequest{Export: "d", Queries: []string{"base:allocation"}}))
	if finalType(t, rs, err) != wire.RepErrInvalid {
		t.Fatalf("SET_META_CONTEXT after STARTTLS without STRUCTURED_REPLY: %+v", rs)
	}
}
