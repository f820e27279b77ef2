package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// NodeName is the DNS name every node certificate carries; node-to-node
// clients verify it instead of an address.
const NodeName = "zos-node"

// Node certificates' organizational unit.
const nodeOU = "zos-node"

// Defaults.
const (
	CATTL   = 10 * 365 * 24 * time.Hour
	NodeTTL = 30 * 24 * time.Hour
	// backdate covers clock skew between nodes.
	backdate = 5 * time.Minute
)

// Errors.
var (
	ErrBadRequest = errors.New("pki: bad certificate request")
	ErrWrongCA    = errors.New("pki: certificate does not belong to this cluster's CA")
)

// DeriveKey derives the cluster CA's P-256 key from the cluster secret.
// The same secret always gives the same key.
func DeriveKey(secret string) (*ecdsa.PrivateKey, error) {
	if len(secret) < 16 {
		return nil, errors.New("pki: cluster secret shorter than 16 bytes")
	}
	for i := uint32(0); i < 64; i++ {
		var ctr [4]byte
		binary.BigEndian.PutUint32(ctr[:], i)
		b, err := hkdf.Key(sha256.New, []byte(secret), ctr[:], "zos cluster CA key v1", 32)
		if err != nil {
			return nil, err
		}
		// ParseRawPrivateKey refuses 0 and values >= the group order
		// (probability ~2^-32): try the next counter then.
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b); err == nil {
			return k, nil
		}
	}
	return nil, errors.New("pki: no CA key derivable from the secret")
}

// CA is the cluster's certificate authority.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// NewCA creates the CA certificate of a cluster, self-signed with the key
// derived from secret.
func NewCA(clusterID, secret string, now time.Time) (*CA, error) {
	key, err := DeriveKey(secret)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "zos cluster CA " + clusterID, Organization: []string{"zos"}, OrganizationalUnit: []string{clusterID}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CATTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA returns the CA from its certificate (PEM) and the cluster secret;
// it fails when the certificate is not the secret's.
func LoadCA(certPEM []byte, secret string) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := DeriveKey(secret)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) || !cert.IsCA {
		return nil, fmt.Errorf("%w: the CA certificate's key is not the cluster secret's", ErrWrongCA)
	}
	return &CA{Cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// PEM returns the CA certificate in PEM.
func (ca *CA) PEM() []byte { return append([]byte(nil), ca.pem...) }

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Fingerprint is the SHA-256 of a certificate, in hex.
func Fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// Request is what a node asks for: its identity and addresses.
type Request struct {
	NodeID string
	IPs    []net.IP
	DNS    []string
}

// NewCSR creates a key and a certificate request for r. It returns both
// in PEM.
func NewCSR(r Request) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: r.NodeID, OrganizationalUnit: []string{nodeOU}},
		IPAddresses: r.IPs, DNSNames: r.DNS,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create request: %w", err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// maxCSR bounds a request; real ones are well under 1 KiB.
const maxCSR = 16 << 10

// ParseCSR decodes and checks a PEM certificate request: well formed,
// signed by its own key, an ECDSA or Ed25519 key, at most 32 addresses.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) > maxCSR {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadRequest, len(csrPEM))
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: not a PEM CERTIFICATE REQUEST", ErrBadRequest)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadRequest, err)
	}
	switch csr.PublicKeyAlgorithm {
	case x509.ECDSA, x509.Ed25519:
	default:
		return nil, fmt.Errorf("%w: key algorithm %v (want ECDSA or Ed25519)", ErrBadRequest, csr.PublicKeyAlgorithm)
	}
	if len(csr.IPAddresses)+len(csr.DNSNames) > 32 {
		return nil, fmt.Errorf("%w: too many names", ErrBadRequest)
	}
	return csr, nil
}

// Sign issues a node certificate for the request csrPEM, valid for ttl
// (NodeTTL when 0). The certificate names nodeID (whatever the request
// says), NodeName and localhost, plus the request's addresses, and serves
// TLS servers and clients.
func (ca *CA) Sign(nodeID string, csrPEM []byte, ttl time.Duration, now time.Time) ([]byte, error) {
	if nodeID == "" {
		return nil, fmt.Errorf("%w: no node id", ErrBadRequest)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = NodeTTL
	}
	dns := []string{NodeName, "localhost"}
	for _, d := range csr.DNSNames {
		if d != NodeName && d != "localhost" {
			dns = append(dns, d)
		}
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ip := range csr.IPAddresses {
		if !ip.Equal(ips[0]) && !ip.Equal(ips[1]) {
			ips = append(ips, ip)
		}
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: nodeID, OrganizationalUnit: []string{nodeOU}, Organization: ca.Cert.Subject.OrganizationalUnit},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Issue creates a key and a node certificate in one step (a node signing
// its own certificate: bootstrap, rotation, renewal).
func (ca *CA) Issue(r Request, ttl time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	keyPEM, csrPEM, err := NewCSR(r)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = ca.Sign(r.NodeID, csrPEM, ttl, now)
	return certPEM, keyPEM, err
}

// ParseCert decodes the first certificate of a PEM block.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("pki: not a PEM CERTIFICATE")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return c, nil
}

// IsNodeCert reports whether c is a node certificate (as issued by Sign).
func IsNodeCert(c *x509.Certificate) bool {
	for _, ou := range c.Subject.OrganizationalUnit {
		if ou == nodeOU {
			for _, d := range c.DNSNames {
				if d == NodeName {
					return true
				}
			}
		}
	}
	return false
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}
