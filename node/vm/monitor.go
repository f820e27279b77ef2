package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// monitor is the one QMP connection of a VM: commands with a context, and
// events read continuously (go-qemu's event channel is unbuffered and
// blocks command replies if nobody reads it) and handed to subscribers.
type monitor struct {
	mon  *qmp.SocketMonitor
	done chan struct{} // closed when the connection ends (qemu exited or Close)

	mu       sync.Mutex
	subs     map[*subscription]struct{}
	shutdown string // reason of the last SHUTDOWN event (guest-shutdown, host-qmp-quit, host-signal, …)
}

type subscription struct {
	match func(qmp.Event) bool
	ch    chan qmp.Event
}

// dialMonitor connects to the QMP socket at path, retrying until timeout
// (qemu creates the socket before the monitor is ready).
func dialMonitor(path string, timeout time.Duration) (*monitor, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		sm, err := qmp.NewSocketMonitor("unix", path, 2*time.Second)
		if err == nil {
			if err = sm.Connect(); err == nil {
				m := &monitor{mon: sm, done: make(chan struct{}), subs: map[*subscription]struct{}{}}
				events, _ := sm.Events(context.Background())
				go m.readEvents(events)
				return m, nil
			}
			sm.Disconnect()
		}
		last = err
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to QMP socket %s: %w", path, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *monitor) readEvents(events <-chan qmp.Event) {
	defer close(m.done)
	for e := range events {
		m.mu.Lock()
		if e.Event == "SHUTDOWN" {
			if r, ok := e.Data["reason"].(string); ok {
				m.shutdown = r
			}
		}
		for s := range m.subs {
			if s.match(e) {
				select {
				case s.ch <- e:
				default:
				}
			}
		}
		m.mu.Unlock()
	}
}

// subscribe returns a channel that receives the next events matching (it
// holds one; later ones are dropped until it is read) and a cancel func.
// Subscribe before issuing the command whose event you wait for.
func (m *monitor) subscribe(match func(qmp.Event) bool) (<-chan qmp.Event, func()) {
	s := &subscription{match: match, ch: make(chan qmp.Event, 1)}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s.ch, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
	}
}

// run executes QMP command cmd with arguments args (nil for none) and
// decodes the "return" value into out (if non-nil).
func (m *monitor) run(ctx context.Context, cmd string, args any, out any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	type result struct {
		b   []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, err := m.mon.Run(b)
		res <- result{b, err}
	}()
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	case <-m.done:
		return fmt.Errorf("qmp %s: %w (the QMP connection closed)", cmd, ErrNotRunning)
	}
	if r.err != nil && connError(r.err) {
		// A reply lost to a closing connection shows up as a read error
		// just before the event stream ends: give it a moment.
		t := time.NewTimer(500 * time.Millisecond)
		defer t.Stop()
		select {
		case <-m.done:
			return fmt.Errorf("qmp %s: %w (the QMP connection closed)", cmd, ErrNotRunning)
		case <-t.C:
		}
		return fmt.Errorf("qmp %s: %w", cmd, r.err)
	}
	if r.err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, r.err) // qemu's own error message
	}
	if out == nil {
		return nil
	}
	var env struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.b, &env); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
	}
	if err := json.Unmarshal(env.Return, out); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
	}
	return nil
}

// connError reports an error of the connection rather than of qemu (go-qemu
// returns qemu's errors as plain strings; a closed stream yields an empty
// reply that fails to decode).
func connError(err error) bool {
	var se *json.SyntaxError
	var ne net.Error
	return errors.As(err, &se) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (m *monitor) shutdownReason() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdown
}

func (m *monitor) close() {
	m.mon.Disconnect()
}
