package slogx

import (
	"slices"
	"testing"
	"time"
)

func TestRare(t *testing.T) {
	r := Rare{Every: time.Hour}
	n, names, ok := r.Note("b", "a")
	if !ok || n != 1 || !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("first note: %d %v %v, want a line at once", n, names, ok)
	}
	for range 5 {
		if _, _, ok := r.Note("c", "a"); ok {
			t.Fatal("a second line within Every")
		}
	}
	r.next = time.Now() // Every has passed
	n, names, ok = r.Note("d")
	if !ok || n != 6 || !slices.Equal(names, []string{"a", "c", "d"}) {
		t.Fatalf("after Every: %d %v %v, want 6 occurrences of a, c, d", n, names, ok)
	}
	var every Rare // zero: every occurrence
	for range 3 {
		if _, _, ok := every.Note(); !ok {
			t.Fatal("the zero Rare held a line back")
		}
	}
}
