package blockd

import (
	"strings"
	"testing"
)

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10G", "512M", "1T", "4096", "1.5K", "64MiB", "", "-1", "9999999999999999999P", "1e9", " 2 gb "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d < 0", s, n)
		}
	})
}

func FuzzParseExportName(f *testing.F) {
	for _, s := range []string{"disk", "disk:ro", "disk@snap", "@", ":ro", "a@b@c", "a:ro:ro", "a/b", "", "x@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, snap, mode, err := ParseExportName(s)
		if err != nil {
			return
		}
		if name == "" || strings.ContainsAny(name, "@:/") || strings.ContainsAny(snap, "@:/") {
			t.Fatalf("ParseExportName(%q) = %q %q", s, name, snap)
		}
		switch mode {
		case ReadWrite:
			if s != name {
				t.Fatalf("read-write export %q parsed as %q", s, name)
			}
		case ReadOnly:
			if s != name+":ro" {
				t.Fatalf("read-only export %q parsed as %q", s, name)
			}
		case Snapshot:
			if s != name+"@"+snap || snap == "" {
				t.Fatalf("snapshot export %q parsed as %q@%q", s, name, snap)
			}
		}
	})
}
