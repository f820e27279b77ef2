package kvm

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

type fakeDisks struct {
	mu       sync.Mutex
	exists   map[string]bool
	here     map[string]bool // open read-write here by someone else
	held     map[string]int
	refuse   map[string]string
	releases int
}

func (f *fakeDisks) Hold(_ context.Context, name string, alone bool) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg := f.refuse[name]; msg != "" {
		return nil, errors.New(msg)
	}
	if alone && (f.here[name] || f.held[name] > 0) {
		return nil, ErrAttachedHere
	}
	f.held[name]++
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.held[name]--
			f.releases++
			f.mu.Unlock()
		})
	}, nil
}

func (f *fakeDisks) Exists(_ context.Context, name string) error {
	if !f.exists[name] {
		return errors.New("vdisk " + name + " does not exist")
	}
	return nil
}

func TestLeaser(t *testing.T) {
	d := &fakeDisks{exists: map[string]bool{"a": true, "b": true, "c": true}, here: map[string]bool{"b": true},
		held: map[string]int{}, refuse: map[string]string{"c": "vdisk c is attached read-write on node n2"}}
	l := NewLeaser(d, "10.0.0.1:10809", nil)
	ctx := context.Background()
	local := "nbd://10.0.0.1:10809/a"
	if err := l.Acquire(ctx, "vm1", local); err != nil {
		t.Fatal(err)
	}
	if d.held["a"] != 1 {
		t.Fatalf("a not held: %v", d.held)
	}
	// Idempotent for the same VM; refused for another VM of the node.
	if err := l.Acquire(ctx, "vm1", local); err != nil || d.held["a"] != 1 {
		t.Fatalf("second acquire by vm1: %v %v", err, d.held)
	}
	if err := l.Acquire(ctx, "vm2", "a"); err == nil || !strings.Contains(err.Error(), "attached read-write to vm vm1") {
		t.Fatalf("vm2 took a: %v", err)
	}
	// Open read-write here by another client; refused elsewhere; missing.
	for url, want := range map[string]string{"b": "by another client", "c": "on node n2", "nope": "does not exist"} {
		if err := l.Acquire(ctx, "vm3", url); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("acquire %s: %v, want %q", url, err, want)
		}
	}
	// Not this blockd, or read-only exports: no lease here.
	for _, url := range []string{"nbd://10.0.0.2:10809/a", "nbd://10.0.0.1:10810/a", "a:ro", "a@s1", "nbd+unix:///a?socket=/x"} {
		if err := l.Acquire(ctx, "vm4", url); err != nil {
			t.Fatalf("acquire %s: %v", url, err)
		}
	}
	if d.held["a"] != 1 {
		t.Fatalf("held: %v", d.held)
	}
	if err := l.Release(ctx, "vm1", local); err != nil || d.held["a"] != 0 {
		t.Fatalf("release: %v %v", err, d.held)
	}
	if err := l.Release(ctx, "vm1", local); err != nil || d.releases != 1 {
		t.Fatalf("second release: %v, %d releases", err, d.releases)
	}
	if err := l.Acquire(ctx, "vm2", "a"); err != nil {
		t.Fatalf("vm2 after vm1 released a: %v", err)
	}
	l.Close()
	if d.held["a"] != 0 {
		t.Fatalf("Close left holds: %v", d.held)
	}
}

func TestLeaserUnspecifiedLocal(t *testing.T) {
	d := &fakeDisks{exists: map[string]bool{"a": true}, here: map[string]bool{}, held: map[string]int{}}
	l := NewLeaser(d, "0.0.0.0:10809", nil)
	if err := l.Acquire(context.Background(), "vm1", "nbd://127.0.0.1:10809/a"); err != nil || d.held["a"] != 1 {
		t.Fatalf("loopback URL of a node bound to 0.0.0.0: %v %v", err, d.held)
	}
}
