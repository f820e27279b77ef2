package size

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "10G": 10 << 30, "512M": 512 << 20, "1T": 1 << 40, "1.5K": 1536,
		"64MiB": 64 << 20, "2gb": 2 << 30, " 8k ": 8192, "0": 0, "16M": 16 << 20, "10GiB": 10 << 30, "512k": 512 << 10,
		"1048576": 1 << 20, "4Ki": 4096, "7B": 7, "4096P": 1 << 62, "4611686018427387904": 1 << 62} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "10X", "1e3", "99999999999P", "4097P", "4611686018427387905",
		"99999999999999999999", "1.5.5K", ".", "NaN", "Inf", "1..0", "8EiB", "9223372036854775807", "4096.5P"} {
		if n, err := Parse(in); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %d, %v; want an ErrInvalid", in, n, err)
		}
	}
}

func TestBytesJSON(t *testing.T) {
	var v struct{ A, B Bytes }
	if err := json.Unmarshal([]byte(`{"A": 4096, "B": "10G"}`), &v); err != nil || v.A != 4096 || v.B != 10<<30 {
		t.Fatalf("%+v %v", v, err)
	}
	for _, in := range []string{`{"A": "10X"}`, `{"A": true}`, `{"A": "-1"}`} {
		if err := json.Unmarshal([]byte(in), &v); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"10G", "512M", "1T", "4096", "1.5K", "64MiB", "", "-1", "9999999999999999999P", "1e9", " 2 gb ",
		"4096P", "4096.0000001P", "0.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if n < 0 || n > Max {
			t.Fatalf("Parse(%q) = %d, outside [0, %d]", s, n, Max)
		}
	})
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 30: "10.0 GiB", -2048: "-2.0 KiB", 1 << 62: "4.0 EiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
