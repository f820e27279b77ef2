package blockd

import (
	"strings"
	"testing"
)

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
