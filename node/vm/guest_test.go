package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testguest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testguest.Cleanup()
	if code == 0 {
		// Every monitor, console pump and watcher ends with its VM or Manager.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The guest (host kernel, busybox initramfs, its /init) is the one the
// e2e VM tests boot too: internal/testguest.
func requireBins(t testing.TB, bins ...string)         { t.Helper(); testguest.Require(t, bins...) }
func guestKernel(t testing.TB) (kernel, modDir string) { t.Helper(); return testguest.Kernel(t) }
func guestInitrd(t testing.TB) string                  { t.Helper(); return testguest.Initrd(t) }

// nbdServer serves a 16 MiB raw file whose first bytes are pattern over
// qemu-nbd (shared, persistent), killed at cleanup. It returns the URL.
func nbdServer(t testing.TB, export, pattern string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), export+".raw")
	b := make([]byte, 16<<20)
	copy(b, pattern)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return nbdServe(t, f, "raw", export)
}

func nbdServe(t testing.TB, f, format, export string) string {
	t.Helper()
	return testguest.NBDServe(t, f, format, export)
}

// fakeLeaser records lease calls and refuses URLs in refuse.
type fakeLeaser struct {
	mu     sync.Mutex
	held   map[string]string // url -> vm
	calls  []string
	refuse map[string]bool
}

func newFakeLeaser() *fakeLeaser {
	return &fakeLeaser{held: map[string]string{}, refuse: map[string]bool{}}
}

func (f *fakeLeaser) Acquire(_ context.Context, vm, url string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "acquire "+vm+" "+url)
	if f.refuse[url] {
		return fmt.Errorf("%s is attached read-write on node n2", url)
	}
	if h, ok := f.held[url]; ok && h != vm {
		return fmt.Errorf("%s is attached read-write by vm %s", url, h)
	}
	f.held[url] = vm
	return nil
}

func (f *fakeLeaser) Release(_ context.Context, vm, url string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "release "+vm+" "+url)
	if f.held[url] == vm {
		delete(f.held, url)
	}
	return nil
}

// log returns a copy of the calls so far.
func (f *fakeLeaser) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeLeaser) heldCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

// testManager opens a Manager over a fresh short directory (unix socket
// paths are limited to 107 bytes) and destroys every VM at cleanup.
func testManager(t testing.TB, l DiskLeaser) (*Manager, string) {
	return testManagerCfg(t, Config{Leaser: l})
}

func testManagerCfg(t testing.TB, cfg Config) (*Manager, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "zvm")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = dir
	m, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroyAll(t, dir); os.RemoveAll(dir) })
	t.Cleanup(func() { m.Close() }) // runs first
	return m, dir
}

// destroyAll destroys what a Manager over dir finds (so VMs of managers a
// test closed are cleaned too).
func destroyAll(t testing.TB, dir string) {
	m, err := Open(Config{Dir: dir, Accel: "tcg"})
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	ctx := context.Background()
	vms, _ := m.List(ctx)
	for _, v := range vms {
		if err := m.Destroy(ctx, v.Name); err != nil {
			t.Logf("cleanup: destroy %s: %v", v.Name, err)
		}
	}
	m.Close()
}

// consoleWaiter follows a VM's console and waits for strings in it.
type consoleWaiter struct {
	mu   sync.Mutex
	buf  strings.Builder
	wake chan struct{}
	r    io.ReadCloser
}

func followConsole(t testing.TB, m *Manager, name string) *consoleWaiter {
	t.Helper()
	r, err := m.Console(name, true)
	if err != nil {
		t.Fatal(err)
	}
	w := &consoleWaiter{wake: make(chan struct{}), r: r}
	t.Cleanup(func() { r.Close() })
	go func() {
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			w.mu.Lock()
			w.buf.WriteString(strings.ReplaceAll(line, "\r", ""))
			close(w.wake)
			w.wake = make(chan struct{})
			w.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return w
}

func (w *consoleWaiter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits (generously: TCG on a loaded machine) until the console
// holds s at least n times.
func (w *consoleWaiter) waitFor(t testing.TB, s string, n int) {
	t.Helper()
	deadline := time.After(5 * time.Minute)
	for {
		w.mu.Lock()
		got := strings.Count(w.buf.String(), s)
		wake := w.wake
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("console did not show %q %d times within 5 min; console:\n%s", s, n, w.text())
		}
	}
}
