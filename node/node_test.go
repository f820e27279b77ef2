package node

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/orchestrator"
)

// randomBase returns the first address of a fresh /24 of the package's
// loopback block: the nodes bind fixed ports.
func randomBase(t testing.TB) string { t.Helper(); return loopback.Fresh("node") + "1" }

// TestDevLifecycle starts an embedded three-node cluster, uses it, stops
// it (no goroutine may outlive it), and starts it again from its data dir.
func TestDevLifecycle(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	base := randomBase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	d, err := StartDev(ctx, DevConfig{Dir: dir, BaseIP: base})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3-node dev cluster serving after %v", time.Since(start))
	c := d.Client(2)
	var cs orchestrator.ClusterStatus
	if err := c.Do(ctx, http.MethodGet, "/api/v1/cluster", nil, &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs.Nodes) != 3 || cs.LeaderID == "" {
		t.Fatalf("status %+v", cs)
	}
	if err := c.Do(ctx, http.MethodPost, "/api/v1/vdisks", map[string]any{"name": "keep", "size": "16M"}, nil); err != nil {
		t.Fatal(err)
	}
	token := d.Token
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Every goroutine the cluster started ends.
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines before, %d after close:\n%s", before, runtime.NumGoroutine(), buf[:n])
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Restart from the same directory: same token, same state.
	d, err = StartDev(ctx, DevConfig{Dir: dir, BaseIP: base})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Token != token {
		t.Fatalf("token changed across restarts")
	}
	c = d.Client(0)
	var v struct {
		Name string `json:"name"`
	}
	if err := c.Do(ctx, http.MethodGet, "/api/v1/vdisks/keep", nil, &v); err != nil || v.Name != "keep" {
		t.Fatalf("vdisk after restart: %+v %v", v, err)
	}
}

// TestStartRefusals: bad configurations fail before anything changes.
func TestStartRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "--dir is required"},
		{Config{Dir: t.TempDir(), Bind: "nope"}, "not an IP address"},
		{Config{Dir: t.TempDir(), Bootstrap: true, Join: "x"}, "exclude each other"},
		{Config{Dir: t.TempDir(), Bind: randomBase(t)}, "start with --bootstrap or --join"},
	} {
		_, err := Start(ctx, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	// A busy port is reported.
	base := randomBase(t)
	d, err := StartDev(ctx, DevConfig{Dir: t.TempDir(), Nodes: 1, BaseIP: base})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = Start(ctx, Config{Dir: t.TempDir(), Bind: base, Bootstrap: true})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second node on a busy address: %v", err)
	}
}
