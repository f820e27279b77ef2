package container

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var specSeeds = []string{
	`{"root":"/mnt/flist","name":"web","hostname":"web1","env":{"A":"b"},"mount":{"/data":"/data"},
	  "nics":[{"type":"default"}],"port":{"8080":80,"127.0.0.1:5353|udp":"53","9000|tcp+udp":9000},
	  "tags":["x"],"privileged":false,"cgroups":{"memory":"512M","cpu":1.5},"command":["httpd","-f"]}`,
	`{"root":"/r","image":{"entrypoint":["/bin/sh","-c"],"cmd":["echo hi"],"env":["PATH=/bin"],"working_dir":"/tmp","user":"1000:1000"}}`,
	`{"root":"/r","command":["true"],"nics":[{"type":"none"}]}`,
	`{"root":"/r","command":["true"],"nics":[{"type":"bridge","id":"br0"}],"cgroups":{"memory":67108864}}`,
	`{"root":"/r","command":["true"],"cgroups":{"memory":"-1"}}`,
	`{"root":"/r","command":["true"],"port":{"0":80}}`,
	`{"root":"/r","command":["true"],"port":{"abc:80":80}}`,
	`{"root":"relative","command":["true"]}`,
	`{"root":"/r","name":"bad name!","command":["true"]}`,
	`{"root":"/r","command":["true"],"port":{"8080":0}}`,
	`{"root":"/r","command":["true"],"nics":[{"type":"none"}],"port":{"80":80}}`,
	`[]`, `null`, `{"root":1}`,
}

func TestParseSpec(t *testing.T) {
	good := map[int]bool{0: true, 1: true, 2: true, 3: true}
	for i, s := range specSeeds {
		_, err := ParseSpec([]byte(s))
		if good[i] != (err == nil) {
			t.Errorf("seed %d: err %v", i, err)
		}
		if err != nil && !errors.Is(err, ErrBadSpec) {
			t.Errorf("seed %d: error %v does not wrap ErrBadSpec", i, err)
		}
	}
	s, _ := ParseSpec([]byte(specSeeds[0]))
	if s.Cgroups.Memory != 512<<20 || s.Port["127.0.0.1:5353|udp"] != 53 {
		t.Fatalf("decoded %+v", s)
	}
	for in, want := range map[string]string{
		"80": "80|tcp", "80|udp+tcp": "80|tcp+udp", "1.2.3.4:80|UDP": "1.2.3.4:80|udp", "80|tcp+tcp": "80|tcp",
	} {
		k, err := ParsePortKey(in)
		if err != nil || k.String() != want {
			t.Errorf("ParsePortKey(%q) = %v, %v; want %s", in, k, err, want)
		}
	}
	for _, in := range []string{"", "0", "65536", "80|sctp", "::1:80", "host:80", "80|"} {
		if _, err := ParsePortKey(in); err == nil {
			t.Errorf("ParsePortKey(%q) accepted", in)
		}
	}
	// Sizes are the project's one size syntax (internal/size).
	for in, want := range map[string]int64{`"1"`: 1, `"4k"`: 4096, `"512M"`: 512 << 20, `"2GiB"`: 2 << 30, `"1Gi"`: 1 << 30, `"-1"`: -1, `-1`: -1, `""`: -1, `4096`: 4096} {
		var b Bytes
		err := b.UnmarshalJSON([]byte(in))
		if (want < 0) != (err != nil) || (want >= 0 && int64(b) != want) {
			t.Errorf("Bytes(%s) = %d, %v; want %d", in, b, err, want)
		}
	}
}

func TestBuildSpec(t *testing.T) {
	s, err := ParseSpec([]byte(specSeeds[0]))
	if err != nil {
		t.Fatal(err)
	}
	oci, err := buildSpec(withProcess(s.args(), s.env("web1"), s.cwd()), withMemory(int64(s.Cgroups.Memory)),
		withCPU(s.Cgroups.CPU), withBinds(s.Mount), withNetNS("/run/x"))
	if err != nil {
		t.Fatal(err)
	}
	if *oci.Linux.Resources.Memory.Limit != 512<<20 || *oci.Linux.Resources.CPU.Quota != 150000 {
		t.Fatalf("resources %+v", oci.Linux.Resources)
	}
	if strings.Contains(strings.Join(oci.Process.Capabilities.Effective, ","), "CAP_SYS_ADMIN") {
		t.Fatal("unprivileged spec has CAP_SYS_ADMIN")
	}
	last := oci.Linux.Namespaces[len(oci.Linux.Namespaces)-1]
	if last.Type != specs.NetworkNamespace || last.Path != "/run/x" {
		t.Fatalf("namespaces %+v", oci.Linux.Namespaces)
	}
	if e := oci.Process.Env; e[0] != "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" || e[1] != "A=b" || e[2] != "HOSTNAME=web1" {
		t.Fatalf("env %v", e)
	}
	p, _ := buildSpec(withPrivileged())
	if len(p.Linux.MaskedPaths) != 0 || !p.Linux.Resources.Devices[0].Allow {
		t.Fatalf("privileged spec %+v", p.Linux)
	}
}

// FuzzParseSpec: decoding never panics; whatever validates survives a JSON
// round trip, builds a runtime spec, and its port keys are canonical.
func FuzzParseSpec(f *testing.F) {
	for _, s := range specSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data)
		if err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("error %v does not wrap ErrBadSpec", err)
			}
			return
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSpec(b); err != nil {
			t.Fatalf("valid spec does not round-trip: %v\n%s", err, b)
		}
		if _, err := buildSpec(withProcess(s.args(), s.env(s.Hostname), s.cwd()), withMemory(int64(s.Cgroups.Memory)),
			withCPU(s.Cgroups.CPU), withBinds(s.Mount)); err != nil {
			t.Fatalf("valid spec does not build: %v", err)
		}
		for k := range s.Port {
			pk, err := ParsePortKey(k)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParsePortKey(pk.String())
			if err != nil || again.String() != pk.String() {
				t.Fatalf("port key %q: canonical %q not stable: %v", k, pk, err)
			}
		}
	})
}
