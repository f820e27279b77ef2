package nbd_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/memexport"
	client "github.com/zosproject/zos/blockd/nbd/nbdclient"
)

// testServer is a server on 127.0.0.1 with a registry and its exports.
type testServer struct {
	srv     *nbd.Server
	addr    string
	exports *nbd.StaticExports
	reg     *prometheus.Registry
	done    chan error
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts a server with cfg (Exports, Logger and Registerer are
// filled in unless set). The server is closed at cleanup, which also checks
// that no goroutine outlives it.
func startServer(t testing.TB, cfg nbd.Config) *testServer {
	t.Helper()
	base := runtime.NumGoroutine()
	ts := &testServer{reg: prometheus.NewRegistry(), done: make(chan error, 1), logs: &syncBuffer{}}
	if cfg.Exports == nil {
		ts.exports = nbd.NewStaticExports()
		cfg.Exports = ts.exports
	} else if se, ok := cfg.Exports.(*nbd.StaticExports); ok {
		ts.exports = se
	}
	if cfg.Logger == nil {
		var w io.Writer = ts.logs
		if testing.Verbose() {
			w = io.MultiWriter(ts.logs, os.Stderr)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Registerer == nil {
		cfg.Registerer = ts.reg
	}
	srv, err := nbd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ts.addr = ln.Addr().String()
	go func() { ts.done <- srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-ts.done:
			if err != nbd.ErrServerClosed {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
		checkGoroutines(t, base)
	})
	return ts
}

// checkGoroutines waits for the goroutine count to come back to base.
func checkGoroutines(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutine leak: %d goroutines, %d before\n%s", n, base, buf)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addMem adds a memory export of size bytes.
func (ts *testServer) addMem(t testing.TB, name string, size int64, info nbd.ExportInfo) *memexport.Export {
	t.Helper()
	e, err := memexport.New(size, memexport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info.Name = name
	ts.exports.Add(e, info)
	return e
}

func (ts *testServer) dial(t testing.TB, o client.Options) *client.Conn {
	t.Helper()
	c, err := client.Dial(ts.addr, o)
	if err != nil {
		t.Fatalf("dial %+v: %v", o, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// metric returns the value of a counter or gauge with the given labels.
func (ts *testServer) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
		if b[i] == 0 {
			b[i] = 1
		}
	}
	return b
}

// hookExport wraps an Export with per-method hooks for fault injection.
type hookExport struct {
	nbd.Export
	read    func(ctx context.Context, p []byte, off int64) error
	write   func(ctx context.Context, p []byte, off int64, fua bool) error
	flush   func(ctx context.Context) error
	zero    func(ctx context.Context, off, n int64, f nbd.ZeroFlags) error
	status  func(ctx context.Context, off, n int64) ([]nbd.Extent, error)
	flushes atomic.Int64
}

func (h *hookExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	if h.read != nil {
		return h.read(ctx, p, off)
	}
	return h.Export.ReadAt(ctx, p, off)
}

func (h *hookExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if h.write != nil {
		return h.write(ctx, p, off, fua)
	}
	return h.Export.WriteAt(ctx, p, off, fua)
}

func (h *hookExport) Flush(ctx context.Context) error {
	h.flushes.Add(1)
	if h.flush != nil {
		return h.flush(ctx)
	}
	return h.Export.Flush(ctx)
}

func (h *hookExport) WriteZeroes(ctx context.Context, off, n int64, f nbd.ZeroFlags) error {
	if h.zero != nil {
		return h.zero(ctx, off, n, f)
	}
	return h.Export.WriteZeroes(ctx, off, n, f)
}

func (h *hookExport) BlockStatus(ctx context.Context, off, n int64) ([]nbd.Extent, error) {
	if h.status != nil {
		return h.status(ctx, off, n)
	}
	return h.Export.BlockStatus(ctx, off, n)
}

// funcExports is an Exports built from functions, for error paths.
type funcExports struct {
	list func(ctx context.Context) ([]nbd.ExportInfo, error)
	info func(ctx context.Context, name string) (nbd.ExportInfo, error)
	open func(ctx context.Context, name string) (nbd.Export, nbd.ExportInfo, func(), error)
}

func (f *funcExports) List(ctx context.Context) ([]nbd.ExportInfo, error) { return f.list(ctx) }
func (f *funcExports) Info(ctx context.Context, name string) (nbd.ExportInfo, error) {
	return f.info(ctx, name)
}
func (f *funcExports) Open(ctx context.Context, name string) (nbd.Export, nbd.ExportInfo, func(), error) {
	return f.open(ctx, name)
}

func mustContain(t testing.TB, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

var _ = fmt.Sprintf

func numGoroutines() int { return runtime.NumGoroutine() }

func mustMem(size int64) *memexport.Export { return memexport.MustNew(size, memexport.Options{}) }
