package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/zosproject/zos/internal/pki"
	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator"
)

// strangerStream is a Raft stream layer dialing with cfg: a peer that
// speaks real Raft, with whatever certificate cfg holds. It accepts
// nothing; Close ends the transport's Accept.
type strangerStream struct {
	cfg    *tls.Config
	closed chan struct{}
	once   *sync.Once
}

func newStrangerStream(cfg *tls.Config) strangerStream {
	return strangerStream{cfg: cfg, closed: make(chan struct{}), once: new(sync.Once)}
}

func (s strangerStream) Accept() (net.Conn, error) { <-s.closed; return nil, net.ErrClosed }
func (s strangerStream) Close() error              { s.once.Do(func() { close(s.closed) }); return nil }
func (s strangerStream) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (s strangerStream) Dial(a hraft.ServerAddress, d time.Duration) (net.Conn, error) {
	if s.cfg == nil {
		return net.DialTimeout("tcp", string(a), d)
	}
	return tls.DialWithDialer(&net.Dialer{Timeout: d}, "tcp", string(a), s.cfg)
}

// strangers are TLS client configurations no node must accept.
func strangers(t *testing.T, c *testcluster.Cluster) map[string]*tls.Config {
	ca := c.TLSConfig()
	other, err := pki.NewCA("intruder", "an-intruder-secret-0123456789", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, _ := other.Issue(pki.Request{NodeID: "n9"}, 0, time.Now())
	wrong, _ := tls.X509KeyPair(cert, key)
	selfKey, _ := pki.DeriveKey("self-signed-secret-0123456789")
	self, _ := pki.NewCA("self", "self-signed-secret-0123456789", time.Now())
	return map[string]*tls.Config{
		"plaintext":      nil,
		"no certificate": {RootCAs: ca.RootCAs, ServerName: pki.NodeName},
		"another CA":     {RootCAs: ca.RootCAs, ServerName: pki.NodeName, Certificates: []tls.Certificate{wrong}},
		"self-signed":    {RootCAs: ca.RootCAs, ServerName: pki.NodeName, Certificates: []tls.Certificate{{Certificate: [][]byte{self.Cert.Raw}, PrivateKey: selfKey}}},
	}
}

// TestTLSRefusesStrangers: raw clients without a node certificate, with
// one of another CA or self-signed, plaintext ones and truncated
// handshakes are refused on the Raft port, the shard port and /internal;
// the cluster state is unchanged and the cluster keeps serving.
func TestTLSRefusesStrangers(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before, err := status(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	leader := int(before.LeaderID[1] - '1')
	raftAddr := c.Nodes[leader].IP + ":9901"
	shardAddr := c.Nodes[leader].IP + ":9900"

	for name, cfg := range strangers(t, c) {
		// Raft: a vote request with a huge term would depose the leader.
		trans := hraft.NewNetworkTransport(newStrangerStream(cfg), 1, 3*time.Second, io.Discard)
		var vr hraft.RequestVoteResponse
		err := trans.RequestVote("n1", hraft.ServerAddress(raftAddr), &hraft.RequestVoteRequest{
			RPCHeader: hraft.RPCHeader{ID: []byte("n9"), Addr: []byte("127.0.0.1:1")}, Term: before.Term + 1000, LastLogIndex: 1 << 40, LastLogTerm: before.Term + 1000}, &vr)
		if err == nil {
			t.Errorf("%s: Raft vote request answered (granted=%v)", name, vr.Granted)
		}
		var ae hraft.AppendEntriesResponse
		if err := trans.AppendEntries("n1", hraft.ServerAddress(raftAddr), &hraft.AppendEntriesRequest{
			RPCHeader: hraft.RPCHeader{ID: []byte("n9"), Addr: []byte("127.0.0.1:1")}, Term: before.Term + 1000}, &ae); err == nil {
			t.Errorf("%s: Raft append entries answered", name)
		}
		trans.Close()
		// Shard protocol: the connection closes before any frame.
		var conn net.Conn
		if cfg == nil {
			conn, err = net.Dial("tcp", shardAddr)
		} else {
			conn, err = tls.Dial("tcp", shardAddr, cfg)
		}
		if err == nil {
			conn.Write([]byte("ZOS-SHARD hello\x00\x00\x00\x00"))
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, _ := conn.Read(make([]byte, 64)); n > 0 {
				t.Errorf("%s: the shard server answered %d bytes", name, n)
			}
			conn.Close()
		}
		// /internal: refused (handshake, 403, or a plaintext answer 400).
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		scheme := "https"
		if cfg == nil {
			scheme = "http"
		}
		if cfg != nil {
			cfg2 := cfg.Clone()
			cfg2.ServerName = ""
			hc.Transport = &http.Transport{TLSClientConfig: cfg2}
		}
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s://%s:5000/internal/v1/forward", scheme, c.Nodes[leader].IP), strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer not-the-secret")
		if resp, err := hc.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Errorf("%s: /internal answered %s %s", name, resp.Status, b)
			}
			t.Logf("%s: /internal: %s", name, resp.Status)
		} else {
			t.Logf("%s: /internal: %v", name, err)
		}
	}
	// Truncated handshakes on every TLS port.
	for _, port := range []string{"9901", "9900", "5000", "10809"} {
		conn, err := net.Dial("tcp", c.Nodes[leader].IP+":"+port)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		conn.Close()
	}

	// Unchanged: same leader and term, three members, and it still serves.
	testcluster.Eventually(t, 30*time.Second, func() error { return kvPut(ctx, c.Client(leader), "after-strangers") })
	after, err := status(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	if after.LeaderID != before.LeaderID || after.Term != before.Term || len(after.Nodes) != 3 || after.Epoch != before.Epoch {
		t.Fatalf("cluster changed: before %s term %d epoch %d, after %s term %d epoch %d, %d nodes",
			before.LeaderID, before.Term, before.Epoch, after.LeaderID, after.Term, after.Epoch, len(after.Nodes))
	}
	logb, _ := os.ReadFile(c.Nodes[leader].Log)
	for _, want := range []string{"TLS handshake refused", "link=raft", "internal request without a node certificate refused", "http: TLS handshake error"} {
		if !strings.Contains(string(logb), want) {
			t.Errorf("log of %s lacks %q", c.Nodes[leader].ID, want)
		}
	}
}

// TestTLSClusterLifecycle: a TLS cluster serves curl --cacert, redis-cli
// --tls, nbdinfo over TLS with the cluster CA; a node killed with -9
// rejoins with its stored certificate; rotate-certs re-issues every
// certificate while vdisk I/O and writes keep working.
func TestTLSClusterLifecycle(t *testing.T) {
	requireTools(t, "curl", "redis-cli", "nbdinfo", "qemu-io")
	c := testcluster.Start(t, 3, testcluster.Options{NodeArgs: func(i int) []string {
		if i == 0 {
			return []string{"--resp-tls"}
		}
		return nil
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ip := c.Nodes[0].IP
	ca := c.CAFile()

	out, err := exec.Command("curl", "-sS", "--fail", "--cacert", ca, "https://"+ip+":5000/healthz").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("curl --cacert: %v\n%s", err, out)
	}
	out, err = exec.Command("redis-cli", "--tls", "--cacert", ca, "-h", ip, "-p", "6379", "PING").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PONG") && !strings.Contains(string(out), "NOAUTH") {
		t.Fatalf("redis-cli --tls: %v\n%s", err, out)
	}
	if out, err := c.CLI(0, "vdisk", "create", "tlsdisk", "--size", "16M"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	certs := t.TempDir()
	b, _ := os.ReadFile(ca)
	os.WriteFile(filepath.Join(certs, "ca-cert.pem"), b, 0o644)
	out, err = exec.Command("nbdinfo", "nbds://"+ip+"/tlsdisk?tls-certificates="+certs).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "TLS: true") && !strings.Contains(string(out), "tls: true") {
		t.Logf("nbdinfo output:\n%s", out)
		if err != nil {
			t.Fatalf("nbdinfo over TLS with the cluster CA: %v", err)
		}
	}

	// kill -9 and rejoin with the stored certificate.
	c.Kill(2)
	c.Restart(2)
	c.WaitReady(2, 90*time.Second)

	// I/O and writes across a rotation.
	serials := map[int]string{}
	for i := range c.Nodes {
		serials[i] = nodeSerial(t, c, i)
	}
	var failures, ops atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			if err := kvPut(wctx, c.Client(k%3), fmt.Sprintf("rot-%d", k)); err != nil {
				failures.Add(1)
				t.Logf("write during rotation: %v", err)
			}
			wcancel()
			ops.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			off := (k % 16) << 20
			o, err := runCmd(ctx, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P 0x%02x %d 65536", k%250+1, off), "-c", "flush",
				"-c", fmt.Sprintf("read -P 0x%02x %d 65536", k%250+1, off), fmt.Sprintf("nbd://%s:10809/tlsdisk", c.Nodes[1].IP))
			if err != nil {
				failures.Add(1)
				t.Logf("vdisk I/O during rotation: %v\n%s", err, o)
			}
			ops.Add(1)
		}
	}()
	time.Sleep(2 * time.Second)
	if out, err := c.CLI(1, "cluster", "rotate-certs"); err != nil {
		t.Fatalf("rotate-certs: %v\n%s", err, out)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		for i := range c.Nodes {
			if s := nodeSerial(t, c, i); s == serials[i] {
				return fmt.Errorf("%s still serves certificate %s", c.Nodes[i].ID, s)
			}
		}
		return nil
	})
	time.Sleep(3 * time.Second) // new connections with the new certificates
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d operations failed across the rotation", failures.Load(), ops.Load())
	}
	t.Logf("%d operations across the rotation, none failed", ops.Load())
	var cs orchestrator.ClusterStatus
	if err := c.Get(ctx, 2, "/api/v1/cluster", &cs); err != nil || len(cs.Nodes) != 3 {
		t.Fatalf("after rotation: %v %+v", err, cs)
	}
	// Expiry in /metrics.
	var body string
	testcluster.Eventually(t, 10*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, c.APIAddr(0)+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := c.HTTP().Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if !strings.Contains(body, `zos_tls_cert_expiry_seconds{kind="node"}`) {
			return fmt.Errorf("no expiry metric")
		}
		return nil
	})
}

// nodeSerial is the serial of the certificate node i's API presents.
func nodeSerial(t *testing.T, c *testcluster.Cluster, i int) string {
	conn, err := tls.Dial("tcp", c.Nodes[i].IP+":5000", c.TLSConfig())
	if err != nil {
		t.Fatalf("TLS to %s: %v", c.Nodes[i].ID, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}
