package wait

import (
	"testing"
	"time"
)

// For polls cond until it returns true, and fails t ("timed out after D
// waiting for what") once timeout has passed.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Until polls cond until it returns nil, and fails t with its last error
// once timeout has passed.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	var last error
	if !poll(timeout, func() bool { last = cond(); return last == nil }) {
		t.Fatalf("timed out after %v: %v", timeout, last)
	}
}

// poll reports whether cond held before timeout passed.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	interval := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
		interval = min(2*interval, 50*time.Millisecond)
	}
	return true
}
