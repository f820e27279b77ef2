package blockd

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The invariant check finds broken state (a check that cannot fail is
// worth nothing): each corruption below is reported, and the healthy
// state is not.
func TestInvariantsDetectCorruption(t *testing.T) {
	e := newEnv().withJournal(t)
	s := e.service(t, "n1", nil)
	mustCreate(t, s, "inv", 1<<20, 4096, "db")
	d, _ := mustOpen(t, s, "inv")
	ctx := context.Background()
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{7}, 8192), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{8}, 4096), 4096, false); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.invariantsLocked(); err != nil {
		t.Fatalf("healthy disk: %v", err)
	}
	for _, c := range []struct {
		name, want string
		break_     func() func()
	}{
		{"dirty bytes", "dirty bytes", func() func() { d.cache.bytes++; return func() { d.cache.bytes-- } }},
		{"durable past write", "durable seq", func() func() {
			old := d.seq.durable
			d.seq.durable = d.seq.write + 1
			return func() { d.seq.durable = old }
		}},
		{"done without append or commit", "counted durable", func() func() {
			seq, jr := d.seq, d.jr
			d.jr.done = d.seq.completed
			d.jr.acked, d.seq.committed = 0, 0
			return func() { d.seq, d.jr = seq, jr }
		}},
		{"unqueued dirty block", "not queued", func() func() {
			old := d.cache.fifo
			d.cache.fifo = nil
			return func() { d.cache.fifo = old }
		}},
	} {
		restore := c.break_()
		err := d.invariantsLocked()
		restore()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error about %q", c.name, err, c.want)
		}
	}
}
