package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/node/container/network"
)

// Tests drive real runc, overlayfs, namespaces, veths and nftables: they need
// root and runc (scripts/deps.sh installs runc and busybox-static).
func requireHost(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("container tests need root (overlayfs, namespaces, nftables)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc not installed: run scripts/deps.sh test (apt-get install -y runc)")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("busybox-static missing (scripts/deps.sh test installs it): %v", err)
	}
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// busyboxRoot is a read-only lower dir shared by the package's tests: a
// static busybox, one symlink per applet, and a page for httpd.
func busyboxRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zos-busybox-")
		if err != nil {
			rootErr = err
			return
		}
		rootDir = dir
		rootErr = buildBusybox(dir)
	})
	if rootErr != nil {
		t.Fatalf("busybox root: %v", rootErr)
	}
	return rootDir
}

func buildBusybox(dir string) error {
	for _, d := range []string{"bin", "etc", "srv", "mnt", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), b, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(string(out)) {
		if a == "busybox" {
			continue
		}
		os.Symlink("busybox", filepath.Join(dir, "bin", a))
	}
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc/group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	return os.WriteFile(filepath.Join(dir, "srv/index.html"), []byte("hello from zos\n"), 0o644)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if rootDir != "" {
		os.RemoveAll(rootDir)
	}
	os.Exit(code)
}

func rnd(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// env is one test's manager with its own bridge, nft table and cgroup parent.
type env struct {
	t      testing.TB
	m      *Manager
	cfg    Config
	bridge string
	gw     string
	reg    *prometheus.Registry
}

func newEnv(t testing.TB) *env {
	t.Helper()
	requireHost(t)
	id := rnd(3)
	b := []byte{0}
	rand.Read(b)
	e := &env{t: t, bridge: "zt" + id, reg: prometheus.NewRegistry()}
	third := int(b[0])
	e.gw = fmt.Sprintf("10.%d.%d.1", 200+int(id[0])%50, third)
	nat, err := network.NewNAT("zt" + id)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		Dir:          t.TempDir(),
		Bridge:       e.bridge,
		Bridges:      &network.Netlink{Create: map[string]string{e.bridge: e.gw + "/24"}, NAT: nat},
		NATTable:     "zt" + id,
		CgroupParent: "zt" + id,
		StopTimeout:  2 * time.Second,
		Resolv:       []byte("nameserver 10.0.0.53\n"),
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:   e.reg,
	}
	e.m = e.open()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if e.m != nil {
			for _, c := range e.m.List(ctx) {
				e.m.Terminate(ctx, c.ID)
			}
			e.m.Close()
		}
		network.DeleteBridge(e.bridge, nat)
		nat.Delete()
		for _, p := range cgroupDirs("/" + e.cfg.CgroupParent) {
			os.Remove(p)
		}
	})
	return e
}

func (e *env) open() *Manager {
	e.t.Helper()
	cfg := e.cfg
	cfg.Registerer = prometheus.NewRegistry()
	if e.m == nil {
		cfg.Registerer = e.reg
	}
	m, err := Open(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func logs(t testing.TB, m *Manager, id uint32) string {
	t.Helper()
	r, err := m.Logs(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

// eventually retries f until it returns nil or a generous deadline passes.
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}
