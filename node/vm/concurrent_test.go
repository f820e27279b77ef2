package vm

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// Several VMs created, controlled and destroyed at once (run under -race):
// operations on different VMs do not serialise on each other or corrupt
// the Manager, and nothing is left afterwards.
func TestConcurrentVMs(t *testing.T) {
	requireBins(t, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	leases := newFakeLeaser()
	m, dir := testManager(t, leases)
	ctx := context.Background()
	const n = 3
	urls := make([]string, n)
	for i := range urls {
		urls[i] = nbdServer(t, fmt.Sprintf("d%d", i), "c")
	}
	run := func(f func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = f(i) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("vm %d: %v", i, err)
			}
		}
	}
	run(func(i int) error {
		_, err := m.Create(ctx, guestSpec(t, fmt.Sprintf("c%d", i), "wait", marker(), Media{URL: urls[i]}))
		return err
	})
	run(func(i int) error {
		name := fmt.Sprintf("c%d", i)
		if err := m.Pause(ctx, name); err != nil {
			return err
		}
		if _, err := m.List(ctx); err != nil {
			return err
		}
		if in, err := m.Info(ctx, name); err != nil || in.State != StatePaused {
			return fmt.Errorf("info %+v, %v", in, err)
		}
		return m.Resume(ctx, name)
	})
	if list, _ := m.List(ctx); len(list) != n {
		t.Fatalf("listed %d vms, want %d", len(list), n)
	}
	run(func(i int) error { return m.Destroy(ctx, fmt.Sprintf("c%d", i)) })
	assertNothingLeft(t, m, dir, leases)
}
