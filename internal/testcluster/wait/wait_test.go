package wait

import (
	"errors"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	n := 0
	For(t, time.Minute, "three calls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("%d calls", n)
	}
	start := time.Now()
	if poll(30*time.Millisecond, func() bool { return false }) {
		t.Fatal("no timeout")
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 10*time.Second {
		t.Fatalf("timed out after %v", d)
	}
	m := 0
	Until(t, time.Minute, func() error {
		if m++; m < 2 {
			return errors.New("not yet")
		}
		return nil
	})
}
