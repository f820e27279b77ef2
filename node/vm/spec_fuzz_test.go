package vm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecodeSpec: decoding never panics; a spec that validates builds a
// qemu command line without panicking, re-encodes to a spec that decodes
// equal, and every disk's URL parses to a canonical URL that parses the same.
func FuzzDecodeSpec(f *testing.F) {
	for _, s := range []string{
		`{"name":"vm1","cpu":2,"memory":512,"media":[{"url":"nbd://127.0.0.1:10809/boot"}],"nics":[{"type":"default"}],"port":{"2222":22}}`,
		`{"name":"a","memory":64,"media":[{"url":"vd1","type":"cdrom","bus":"ide"}],"nics":[{"type":"bridge","id":"zos0","hwaddr":"52:54:00:12:34:56"}]}`,
		`{"name":"k","memory":64,"kernel":"/boot/vmlinuz","initrd":"/i","cmdline":"console=ttyS0","media":[{"url":"nbd+unix:///x?socket=/run/nbd.sock","iotune":{"totaliopssecset":true,"totaliopssec":100}}]}`,
		`{"name":".bad","memory":0}`, `{"name":"x","media":[{"url":"nbd://[::1]:1/e"}]}`, `[]`, `{"name":"x","extra":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSpec(b)
		if err != nil {
			return
		}
		if s.CPU == 0 {
			s.CPU = 1
		}
		if s.Validate() != nil {
			return
		}
		var disks []disk
		for i, m := range s.Media {
			tg, err := parseNBD(m.URL, "127.0.0.1:10809")
			if err != nil {
				t.Fatalf("media %d validated but does not parse: %v", i, err)
			}
			again, err := parseNBD(tg.URL(), "127.0.0.1:10809")
			if err != nil || again != tg {
				t.Fatalf("canonical URL %q of %q parses to %+v, %v; want %+v", tg.URL(), m.URL, again, err, tg)
			}
			disks = append(disks, disk{ID: "disk0", Node: "nbd0", URL: tg.URL(), Bus: "virtio", target: tg})
		}
		args := qemuArgs(&s, "tcg", files{"/d"}, disks, nil)
		for _, a := range args {
			if strings.ContainsRune(a, 0) {
				t.Fatalf("NUL in qemu argument %q", a)
			}
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := DecodeSpec(enc)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		if s2.CPU == 0 {
			s2.CPU = 1
		}
		if !reflect.DeepEqual(normalize(s), normalize(s2)) {
			t.Fatalf("round trip changed the spec:\n%+v\n%+v", s, s2)
		}
	})
}

// normalize maps empty and nil slices and maps to nil for comparison.
func normalize(s Spec) Spec {
	if len(s.Media) == 0 {
		s.Media = nil
	}
	if len(s.NICs) == 0 {
		s.NICs = nil
	}
	if len(s.Port) == 0 {
		s.Port = nil
	}
	if len(s.Tags) == 0 {
		s.Tags = nil
	}
	return s
}

func TestParseNBD(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"nbd://127.0.0.1:10809/boot", "nbd://127.0.0.1:10809/boot"},
		{"nbd://10.0.0.1/vd", "nbd://10.0.0.1:10809/vd"},
		{"vm1-boot", "nbd://127.0.0.1:10809/vm1-boot"},
		{"nbd+unix:///e?socket=/run/s", "nbd+unix:///e?socket=/run/s"},
		{"nbd://[::1]:99/e", "nbd://[::1]:99/e"},
	} {
		got, err := parseNBD(c.in, "127.0.0.1:10809")
		if err != nil || got.URL() != c.want {
			t.Errorf("parseNBD(%q) = %q, %v; want %q", c.in, got.URL(), err, c.want)
		}
	}
	for _, bad := range []string{"", "nbd://h:0/e", "nbd://h/", "http://h/e", "nbd://h:1/e?x=1", "nbd+unix:///e", "nbd://u@h/e", "a b", "nbd://h,x/e"} {
		if _, err := parseNBD(bad, "127.0.0.1:10809"); err == nil {
			t.Errorf("parseNBD(%q) accepted", bad)
		}
	}
}
