package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// EnvTLS returns the TLS configuration $ZOS_CACERT asks for: nil when it
// is unset (the system's roots).
func EnvTLS() (*tls.Config, error) {
	f := os.Getenv("ZOS_CACERT")
	if f == "" {
		return nil, nil
	}
	return CAConfig(f)
}

// CAConfig returns a TLS configuration trusting the CA certificates in
// the PEM file.
func CAConfig(file string) (*tls.Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("client: CA certificate (ZOS_CACERT): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("client: %s holds no PEM certificate (get the cluster CA with `zos cluster ca > ca.pem`)", file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// reachError explains a failed request, with what to do for TLS trouble.
func reachError(addr string, err error) error {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("client: %s presents a certificate of an unknown CA: set ZOS_CACERT to the cluster CA (`zos cluster ca --insecure > ca.pem` once, or the ca.pem in a node's data directory): %w", addr, err)
	case errors.As(err, &hn):
		return fmt.Errorf("client: %s: the node's certificate does not name this address (use the node's --advertise address): %w", addr, err)
	case errors.As(err, &ci):
		return fmt.Errorf("client: %s: invalid certificate (expired? run `zos cluster rotate-certs`): %w", addr, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("client: %s serves plain HTTP (a node started with --tls=false): use http:// in ZOS_ADDR: %w", addr, err)
	case strings.Contains(err.Error(), "malformed HTTP response"):
		return fmt.Errorf("client: %s serves HTTPS: use https:// in ZOS_ADDR: %w", addr, err)
	}
	return fmt.Errorf("client: cannot reach zos at %s (set ZOS_ADDR): %w", addr, err)
}
