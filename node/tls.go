package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/internal/pki"
	"github.com/zosproject/zos/orchestrator"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// The cluster CA certificate and the rotation generation live in the kv
// namespace kvTLS (see internal/pki for why the key lives nowhere).
const (
	kvTLS      = "tls"
	kvCA       = "ca"
	kvRotation = "rotation"
)

// RotateCertsPath is the admin route that re-issues every node's
// certificate.
const RotateCertsPath = "/api/v1/cluster/rotate-certs"

// CAPath serves the cluster CA certificate (public: it is what a client
// needs before it can verify anything).
const CAPath = "/api/v1/cluster/ca"

func (n *Node) tlsDir() string { return filepath.Join(n.cfg.Dir, "tls") }

// CAFile is the path of the cluster CA certificate in the node's data
// directory ("" without TLS).
func (n *Node) CAFile() string {
	if n.pki == nil {
		return ""
	}
	return filepath.Join(n.tlsDir(), pki.CAFile)
}

// certRequest is what this node's certificate names.
func (n *Node) certRequest() pki.Request {
	r := pki.Request{NodeID: n.id}
	for _, a := range []string{n.cfg.Bind, n.cfg.Advertise} {
		if ip := net.ParseIP(a); ip != nil && !ip.IsUnspecified() {
			r.IPs = append(r.IPs, ip)
		}
	}
	r.DNS = append(r.DNS, n.cfg.CertNames...)
	if h, err := os.Hostname(); err == nil && h != "" {
		r.DNS = append(r.DNS, h)
	}
	return r
}

// setupTLS prepares the node's TLS identity before Raft starts: loaded
// from DIR/tls on a restart, created with the cluster CA at bootstrap
// (n.bootSecret), or, for a join, the CA only (the certificate comes with
// the join answer).
func (n *Node) setupTLS(ctx context.Context, ident identity) error {
	if n.cfg.DisableTLS {
		return nil
	}
	dir := n.tlsDir()
	switch {
	case ident.ClusterID != "":
		caPEM, certPEM, keyPEM, err := pki.Load(dir)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("node: %s holds no TLS certificate: this node was set up with --tls=false; start it with --tls=false (a cluster is all TLS or all plaintext)", dir)
		}
		if err != nil {
			return fmt.Errorf("node: TLS: %w", err)
		}
		if n.pki, err = pki.NewHolder(caPEM, n.log.With("component", "tls")); err != nil {
			return err
		}
		if certPEM == nil {
			return fmt.Errorf("node: %s has the CA but no node certificate: the join did not finish; wipe %s and join again", dir, n.cfg.Dir)
		}
		return n.pki.Set(certPEM, keyPEM)
	case n.cfg.Bootstrap:
		n.bootSecret = orchestrator.RandomHex(24)
		ca, err := pki.NewCA(n.id, n.bootSecret, time.Now())
		if err != nil {
			return err
		}
		certPEM, keyPEM, err := ca.Issue(n.certRequest(), n.cfg.CertTTL, time.Now())
		if err != nil {
			return err
		}
		if n.pki, err = pki.NewHolder(ca.PEM(), n.log.With("component", "tls")); err != nil {
			return err
		}
		if err := n.pki.Set(certPEM, keyPEM); err != nil {
			return err
		}
		return pki.Save(dir, ca.PEM(), certPEM, keyPEM)
	case n.cfg.Join != "":
		caPEM, err := n.joinCA(ctx)
		if err != nil {
			return err
		}
		n.pki, err = pki.NewHolder(caPEM, n.log.With("component", "tls"))
		return err
	}
	return nil // Start refuses: neither state, --bootstrap nor --join
}

// joinCA returns the CA to trust when joining: --cacert, else the one the
// member at --join presents (trust on first use, logged with its
// fingerprint).
func (n *Node) joinCA(ctx context.Context) ([]byte, error) {
	if n.cfg.CACert != "" {
		b, err := os.ReadFile(n.cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("node: --cacert: %w", err)
		}
		return b, nil
	}
	url := joinURL(n.cfg.Join, true) + CAPath
	hc := &http.Client{Timeout: 10 * time.Second, Transport: client.TLSTransport(&tls.Config{InsecureSkipVerify: true})}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		b, err := fetchCA(ctx, hc, url)
		if err == nil {
			c, _ := pki.ParseCert(b)
			n.log.Warn("trusting the cluster CA presented by the member joined through (no --cacert given): pass --cacert FILE to be sure",
				"via", n.cfg.Join, "ca_sha256", pki.Fingerprint(c))
			return b, nil
		}
		n.log.Info("cluster CA not available yet, retrying", "via", url, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node: fetch the cluster CA from %s: %w (last error: %v)", url, ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

// fetchCA gets the CA from url and checks that the server's own
// certificate chains to it.
func fetchCA(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	ca, err := pki.ParseCert(b)
	if err != nil {
		return nil, err
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return nil, errors.New("no TLS")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := resp.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: pki.NodeName}); err != nil {
		return nil, fmt.Errorf("the member's certificate is not of the CA it serves: %w", err)
	}
	return b, nil
}

// raftTLS returns the Raft transport's TLS configurations (nil, nil
// without TLS).
func (n *Node) raftTLS() (server, client *tls.Config) {
	if n.pki == nil {
		return nil, nil
	}
	return n.pki.PeerServerConfig(), n.pki.PeerClientConfig()
}

// peerTLS is the client configuration of links to other nodes.
func (n *Node) peerTLS() *tls.Config {
	if n.pki == nil {
		return nil
	}
	return n.pki.PeerClientConfig()
}

// peerClient is an API client for another node (https with this node's
// certificate when TLS is on).
func (n *Node) peerClient(addr, token string) *client.Client {
	return client.NewTLS(addr, token, n.peerTLS())
}

// scheme of the API of the cluster's nodes.
func (n *Node) scheme() string {
	if n.pki == nil {
		return "http"
	}
	return "https"
}

// peerTransport is an HTTP transport to other nodes.
func (n *Node) peerTransport() http.RoundTripper {
	if n.pki == nil {
		return &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	}
	t := client.TLSTransport(n.pki.PeerClientConfig())
	t.MaxIdleConnsPerHost = 64
	return t
}

// signNode signs a joining node's CSR with the CA derived from the
// cluster secret.
func (n *Node) signNode(id string, csrPEM []byte) (certPEM, caPEM []byte, err error) {
	ca, err := n.clusterCA()
	if err != nil {
		return nil, nil, err
	}
	cert, err := ca.Sign(id, csrPEM, n.cfg.CertTTL, time.Now())
	if err != nil {
		return nil, nil, err
	}
	n.log.Info("signed a node certificate", "for", id)
	return cert, ca.PEM(), nil
}

// clusterCA returns the CA (certificate from the replicated state, key
// from the secret).
func (n *Node) clusterCA() (*pki.CA, error) {
	var secret, caPEM string
	n.raft.ReadStale(func(st *fsm.State) error {
		secret = st.Secret
		if kv := st.KV[kvTLS][kvCA]; kv != nil {
			caPEM = string(kv.Value)
		}
		return nil
	})
	if caPEM == "" {
		if n.pki == nil {
			return nil, errors.New("node: this cluster runs without TLS")
		}
		return nil, errors.New("node: the cluster CA is not in the replicated state yet")
	}
	return pki.LoadCA([]byte(caPEM), secret)
}

// publishCA puts the CA certificate into the replicated state (bootstrap).
func (n *Node) publishCA(ctx context.Context) error {
	if n.pki == nil {
		return nil
	}
	caPEM := string(pemOf(n.pki.CA()))
	return raft.Exec(ctx, n.raft, fsm.KVPut, fsm.KVPutArgs{NS: kvTLS, Key: kvCA, Value: []byte(caPEM)})
}

// joinCSR makes the key and request sent with a join; the key is kept
// until the answer's certificate is installed (acceptJoinCert).
func (n *Node) joinCSR() (string, error) {
	if n.pki == nil {
		return "", nil
	}
	key, csr, err := pki.NewCSR(n.certRequest())
	if err != nil {
		return "", err
	}
	n.joinKey = key
	return string(csr), nil
}

func (n *Node) acceptJoinCert(resp *orchestrator.JoinResponse) error {
	if n.pki == nil {
		return nil
	}
	if resp.Cert == "" {
		return errors.New("node: the cluster answered the join without a certificate: it runs without TLS; start this node with --tls=false")
	}
	if strings.TrimSpace(resp.CACert) != strings.TrimSpace(string(pemOf(n.pki.CA()))) {
		return errors.New("node: the cluster's CA is not the one this node trusts (--cacert)")
	}
	if err := n.pki.Set([]byte(resp.Cert), n.joinKey); err != nil {
		return err
	}
	n.log.Info("received a node certificate", "expires", n.pki.Leaf().NotAfter)
	return pki.Save(n.tlsDir(), []byte(resp.CACert), []byte(resp.Cert), n.joinKey)
}

// renew issues this node a new certificate (rotation, renewal) with the
// cluster CA and installs it; the listeners use it from the next
// handshake on.
func (n *Node) renew(why string) error {
	ca, err := n.clusterCA()
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.Issue(n.certRequest(), n.cfg.CertTTL, time.Now())
	if err != nil {
		return err
	}
	if err := pki.Save(n.tlsDir(), nil, certPEM, keyPEM); err != nil {
		return err
	}
	if err := n.pki.Set(certPEM, keyPEM); err != nil {
		return err
	}
	n.log.Info("node certificate renewed", "why", why, "serial", n.pki.Leaf().SerialNumber.Text(16), "expires", n.pki.Leaf().NotAfter)
	return nil
}

// rotationGen is the rotation generation asked for in the replicated
// state (0: none yet).
func (n *Node) rotationGen() uint64 {
	var v uint64
	n.raft.ReadStale(func(st *fsm.State) error {
		if kv := st.KV[kvTLS][kvRotation]; kv != nil {
			v = kv.Version
		}
		return nil
	})
	return v
}

func (n *Node) loadGen() uint64 {
	b, _ := os.ReadFile(filepath.Join(n.tlsDir(), "rotation"))
	var g uint64
	fmt.Sscan(strings.TrimSpace(string(b)), &g)
	return g
}

// certLoop renews the node certificate when a rotation is asked for
// (POST rotate-certs bumps the kv key) or a third of its life is left.
func (n *Node) certLoop() {
	defer n.wg.Done()
	done := n.loadGen()
	for {
		ch := n.raft.Changed()
		if gen := n.rotationGen(); gen > done {
			if err := n.renew("rotation requested"); err != nil {
				n.log.Warn("certificate rotation failed; retrying", "err", err)
			} else {
				done = gen
				writeFileAtomic(filepath.Join(n.tlsDir(), "rotation"), fmt.Appendf(nil, "%d\n", gen), 0o600)
			}
		}
		if l := n.pki.Leaf(); l != nil {
			life := l.NotAfter.Sub(l.NotBefore)
			if time.Until(l.NotAfter) < life/3 {
				if err := n.renew("a third of its validity left"); err != nil {
					n.log.Warn("certificate renewal failed; retrying", "err", err, "expires", l.NotAfter)
				}
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-ch:
		case <-time.After(n.certCheck()):
		}
	}
}

// certCheck is how often certLoop looks at the expiry.
func (n *Node) certCheck() time.Duration {
	ttl := n.cfg.CertTTL
	if ttl <= 0 {
		ttl = pki.NodeTTL
	}
	return min(max(ttl/100, time.Second), time.Minute)
}

// startTLSLoops registers the expiry metrics and starts the renewal loop.
func (n *Node) startTLSLoops() {
	if n.pki == nil {
		return
	}
	for kind, cert := range map[string]func() *x509.Certificate{"node": n.pki.Leaf, "ca": n.pki.CA} {
		n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zos_tls_cert_expiry_seconds",
			Help:        "Seconds until the certificate expires (kind: node, ca).",
			ConstLabels: prometheus.Labels{"kind": kind}}, func() float64 {
			if c := cert(); c != nil {
				return time.Until(c.NotAfter).Seconds()
			}
			return 0
		}))
	}
	n.wg.Add(1)
	go n.certLoop()
}

// tlsRoutes mounts the CA and rotation routes.
func (n *Node) tlsRoutes(public, protected *http.ServeMux) {
	public.Handle("GET "+CAPath, httpx.Handler(func(w http.ResponseWriter, r *http.Request) error {
		if n.pki == nil {
			return httpx.Errorf(http.StatusNotFound, "not_found", "this cluster runs without TLS")
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(pemOf(n.pki.CA()))
		return nil
	}))
	protected.Handle("POST "+RotateCertsPath, httpx.Handler(func(w http.ResponseWriter, r *http.Request) error {
		id, err := n.api.Identify(r)
		if err != nil {
			return err
		}
		if !id.IsAdmin() {
			return httpx.Errorf(http.StatusForbidden, "forbidden", "rotating certificates needs an admin token")
		}
		if n.pki == nil {
			return httpx.Errorf(http.StatusConflict, "conflict", "this cluster runs without TLS")
		}
		err = raft.Exec(r.Context(), n.raft, fsm.KVPut, fsm.KVPutArgs{NS: kvTLS, Key: kvRotation, Value: []byte(time.Now().UTC().Format(time.RFC3339))})
		if err != nil {
			return err
		}
		gen := n.rotationGen()
		n.log.Info("certificate rotation requested", "by", id.Name, "generation", gen)
		httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"generation": gen})
		return nil
	}))
}

// internalOnlyNodes refuses /internal/ requests that do not come with a
// node certificate of the cluster CA (on top of the cluster secret the
// routes check).
func (n *Node) internalOnlyNodes(h http.Handler) http.Handler {
	if n.pki == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/internal/") && !pki.PeerIsNode(r.TLS) {
			n.log.Warn("internal request without a node certificate refused", "peer", r.RemoteAddr, "path", r.URL.Path)
			httpx.WriteError(w, httpx.Errorf(http.StatusForbidden, "forbidden", "internal routes need a node certificate of this cluster"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tlsErrorLog sends net/http's handshake errors to slog.
func (n *Node) tlsErrorLog() *log.Logger {
	return slog.NewLogLogger(n.log.With("component", "api").Handler(), slog.LevelWarn)
}

func pemOf(c *x509.Certificate) []byte {
	return pemEncode(c.Raw)
}

func pemEncode(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// hubTLS makes a hub client of this cluster's nodes use https with the
// node's certificate (no-op without TLS).
func (n *Node) hubTLS(c *hub.Client) {
	if n.pki != nil {
		c.HTTP = &http.Client{Transport: n.peerTransport()}
	}
}
