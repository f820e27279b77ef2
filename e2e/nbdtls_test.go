package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
)

// writePKI writes a CA, a server certificate for ip and a client
// certificate: the server files to srv/, libnbd's credentials directory
// (ca-cert.pem, client-cert.pem, client-key.pem) to cli/.
func writePKI(t *testing.T, ip string) (srv, cli string) {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "zos e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tm := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: ip},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP(ip)}}
		der, err := x509.CreateCertificate(rand.Reader, tm, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	srv, cli = t.TempDir(), t.TempDir()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	sc, sk := leaf(2, x509.ExtKeyUsageServerAuth)
	cc, ck := leaf(3, x509.ExtKeyUsageClientAuth)
	for dir, files := range map[string]map[string][]byte{
		srv: {"cert.pem": sc, "key.pem": sk, "ca.pem": caPEM},
		cli: {"ca-cert.pem": caPEM, "client-cert.pem": cc, "client-key.pem": ck},
	} {
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return srv, cli
}

// TestNBDTLS: a node started with --nbd-tls-required serves vdisks over
// nbds:// with client certificates, and refuses plain NBD clients.
func TestNBDTLS(t *testing.T) {
	if _, err := exec.LookPath("nbdinfo"); err != nil {
		t.Fatal("nbdinfo missing: scripts/deps.sh test installs libnbd-bin")
	}
	c := testcluster.Start(t, 1, testcluster.Options{})
	// Restart the node with TLS now that its address is known.
	ip := c.Nodes[0].IP
	srv, cli := writePKI(t, ip)
	c.Stop(0)
	c.Nodes[0].SetArgs(append(c.Nodes[0].Args(), "--nbd-tls-cert", filepath.Join(srv, "cert.pem"),
		"--nbd-tls-key", filepath.Join(srv, "key.pem"), "--nbd-tls-client-ca", filepath.Join(srv, "ca.pem"), "--nbd-tls-required"))
	c.Restart(0)
	c.WaitReady(0, time.Minute)
	if out, err := c.CLI(0, "vdisk", "create", "secret", "--size", "8M"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := exec.Command("nbdinfo", "nbds://"+ip+"/secret?tls-certificates="+cli).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "export-size: 8388608") || !strings.Contains(string(out), "TLS") {
		t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
	}
	out, err = exec.Command("nbdinfo", "nbd://"+ip+"/secret").CombinedOutput()
	if err == nil {
		t.Fatalf("a plain NBD client was served by a TLS-required node:\n%s", out)
	}
	t.Logf("plain client refused: %s", strings.TrimSpace(string(out)))
}
