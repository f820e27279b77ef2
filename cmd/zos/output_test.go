package main

import "testing"

// TestExtentValue: --extent-size takes a size or "off" (-1, a chunk per
// block), and refuses anything else.
func TestExtentValue(t *testing.T) {
	for in, want := range map[string]int64{"1M": 1 << 20, "4M": 4 << 20, "off": -1, "OFF": -1, "512K": 512 << 10} {
		var v extentValue
		if err := v.Set(in); err != nil || int64(v) != want {
			t.Fatalf("Set(%q) = %d, %v; want %d", in, v, err, want)
		}
	}
	var v extentValue
	if err := v.Set("no"); err == nil {
		t.Fatal(`Set("no") accepted`)
	}
	if v = -1; v.String() != "off" {
		t.Fatalf("-1 prints %q", v.String())
	}
}
