package container

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/zosproject/zos/internal/size"
	"github.com/zosproject/zos/node/container/network"
)

// Spec is what a container is made from; its JSON form is the argument of
// 0-core's corex.create (root, name, hostname, env, mount, nics, port, tags,
// privileged, cgroups) with Root already resolved to a directory by the
// caller (the agent mounts the flist and passes the mount point).
type Spec struct {
	// Root is the read-only lower directory (the flist's shared FUSE mount).
	Root string `json:"root"`
	// Name is unique on the node; empty: "c<ID>".
	Name     string `json:"name,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Env is added to (and overrides) the image's environment.
	Env map[string]string `json:"env,omitempty"`
	// Mount bind-mounts host paths (keys) at container paths (values).
	Mount map[string]string `json:"mount,omitempty"`
	// Nics: nil gives one nic on the manager's default bridge;
	// [{"type":"none"}] gives loopback only.
	Nics []Nic `json:"nics,omitempty"`
	// Port forwards host ports to container ports: {"8080": 80},
	// {"127.0.0.1:8080|udp": 53}, {"9000|tcp+udp": 9000}.
	Port       map[string]PortNumber `json:"port,omitempty"`
	Tags       []string              `json:"tags,omitempty"`
	Privileged bool                  `json:"privileged,omitempty"`
	Cgroups    Cgroups               `json:"cgroups,omitempty"`
	// Command, when given, replaces the image's entrypoint and cmd.
	Command []string `json:"command,omitempty"`
	// Dir is the working directory; empty: the image's, else "/".
	Dir string `json:"dir,omitempty"`
	// Image is the OCI config the flist was built from (its meta "image"
	// object: the JSON of flist.ImageConfig decodes into it).
	Image *Image `json:"image,omitempty"`
}

// Image is the part of an OCI image config a container runs with. Its JSON
// field names are those of flist.ImageConfig, so an flist's meta image
// object decodes into it.
type Image struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Nic is a network interface of a container.
type Nic struct {
	// Type: "default" (the manager's bridge), "bridge" (ID names the
	// bridge) or "none".
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
}

// Cgroups are resource limits.
type Cgroups struct {
	// Memory in bytes; JSON takes a number or a string with a K/M/G suffix.
	Memory Bytes `json:"memory,omitempty"`
	// CPU in cores (1.5 = one and a half cores of CPU time).
	CPU float64 `json:"cpu,omitempty"`
}

// Bytes is a size that decodes from 123, "123", "512M" or "1G".
type Bytes int64

// UnmarshalJSON implements json.Unmarshaler.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	var s string
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
	} else {
		s = string(data)
	}
	v, err := size.Parse(s)
	if err != nil {
		return err
	}
	*b = Bytes(v)
	return nil
}

// PortNumber is a container port that decodes from 80 or "80".
type PortNumber uint16

// UnmarshalJSON implements json.Unmarshaler.
func (p *PortNumber) UnmarshalJSON(data []byte) error {
	s := strings.Trim(string(bytes.TrimSpace(data)), `"`)
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v == 0 {
		return fmt.Errorf("bad port %s", data)
	}
	*p = PortNumber(v)
	return nil
}

// PortKey is a parsed port-forward key: [addr:]port[|tcp|udp|tcp+udp].
type PortKey struct {
	Addr   net.IP // nil: every local address
	Port   uint16
	Protos []network.Proto
}

// String is the canonical form of the key.
func (k PortKey) String() string {
	var b strings.Builder
	if k.Addr != nil {
		b.WriteString(k.Addr.String())
		b.WriteByte(':')
	}
	b.WriteString(strconv.Itoa(int(k.Port)))
	b.WriteByte('|')
	for i, p := range k.Protos {
		if i > 0 {
			b.WriteByte('+')
		}
		b.WriteString(string(p))
	}
	return b.String()
}

// ParsePortKey parses "8080", "8080|udp", "127.0.0.1:8080|tcp+udp".
func ParsePortKey(s string) (PortKey, error) {
	var k PortKey
	hp, protos, hasProto := strings.Cut(s, "|")
	if hasProto {
		seen := map[network.Proto]bool{}
		for _, p := range strings.Split(protos, "+") {
			pr := network.Proto(strings.ToLower(strings.TrimSpace(p)))
			if pr != network.TCP && pr != network.UDP {
				return k, fmt.Errorf("%w: port %q: protocol %q (want tcp, udp or tcp+udp)", ErrBadSpec, s, p)
			}
			if !seen[pr] {
				seen[pr] = true
				k.Protos = append(k.Protos, pr)
			}
		}
		sort.Slice(k.Protos, func(i, j int) bool { return k.Protos[i] < k.Protos[j] })
	} else {
		k.Protos = []network.Proto{network.TCP}
	}
	if i := strings.LastIndexByte(hp, ':'); i >= 0 {
		ip := net.ParseIP(hp[:i]).To4()
		if ip == nil {
			return k, fmt.Errorf("%w: port %q: %q is not an IPv4 address", ErrBadSpec, s, hp[:i])
		}
		k.Addr = ip
		hp = hp[i+1:]
	}
	v, err := strconv.ParseUint(hp, 10, 16)
	if err != nil || v == 0 {
		return k, fmt.Errorf("%w: port %q: host port must be 1-65535", ErrBadSpec, s)
	}
	k.Port = uint16(v)
	return k, nil
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
)

// minMemory: below it the runtime itself would be killed.
const minMemory = 4 << 20

// ParseSpec decodes a corex.create argument and validates it.
func ParseSpec(data []byte) (Spec, error) {
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return Spec{}, fmt.Errorf("%w: %v", ErrBadSpec, err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// Validate checks everything that can be checked without touching the host
// except that mount sources exist. Errors wrap ErrBadSpec.
func (s *Spec) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadSpec}, a...)...)
	}
	if s.Root == "" || !path.IsAbs(s.Root) {
		return bad("root %q must be an absolute directory", s.Root)
	}
	if strings.ContainsAny(s.Root, ",:\x00") {
		return bad("root %q must not contain ',' or ':'", s.Root)
	}
	if s.Name != "" && !nameRE.MatchString(s.Name) {
		return bad("name %q: letters, digits, '_', '.', '-', at most 63", s.Name)
	}
	if s.Hostname != "" && (len(s.Hostname) > 253 || !hostnameRE.MatchString(s.Hostname)) {
		return bad("hostname %q is not a valid host name", s.Hostname)
	}
	for k, v := range s.Env {
		if !envKeyRE.MatchString(k) || strings.ContainsRune(v, 0) {
			return bad("env %q", k)
		}
	}
	for h, c := range s.Mount {
		if !path.IsAbs(h) || !path.IsAbs(c) || strings.ContainsRune(h+c, 0) {
			return bad("mount %q: %q: both paths must be absolute", h, c)
		}
		if path.Clean(c) == "/" {
			return bad("mount %q over the container's root", h)
		}
	}
	net := false
	for _, n := range s.Nics {
		switch n.Type {
		case "default", "":
			net = true
		case "bridge":
			if n.ID == "" || len(n.ID) > 15 {
				return bad("nic of type bridge needs the bridge name as id")
			}
			net = true
		case "none":
		default:
			return bad("nic type %q not supported (default, bridge, none)", n.Type)
		}
	}
	if s.Nics == nil {
		net = true
	}
	if len(s.Nics) > 1 {
		return bad("at most one nic is supported")
	}
	seen := map[string]bool{}
	for k := range s.Port {
		if !net {
			return bad("port forwards need a nic")
		}
		pk, err := ParsePortKey(k)
		if err != nil {
			return err
		}
		for _, f := range pk.expand() {
			if seen[f] {
				return bad("port %q given twice", k)
			}
			seen[f] = true
		}
	}
	for _, t := range s.Tags {
		if strings.ContainsRune(t, 0) {
			return bad("tag %q", t)
		}
	}
	if s.Cgroups.Memory < 0 || (s.Cgroups.Memory > 0 && s.Cgroups.Memory < minMemory) {
		return bad("memory limit %d: at least %d bytes, or 0 for none", s.Cgroups.Memory, minMemory)
	}
	if math.IsNaN(s.Cgroups.CPU) || s.Cgroups.CPU < 0 || s.Cgroups.CPU > 1024 || (s.Cgroups.CPU > 0 && s.Cgroups.CPU < 0.01) {
		return bad("cpu limit %v: between 0.01 and 1024 cores, or 0 for none", s.Cgroups.CPU)
	}
	for _, a := range s.Command {
		if strings.ContainsRune(a, 0) {
			return bad("command contains NUL")
		}
	}
	if s.Dir != "" && !path.IsAbs(s.Dir) {
		return bad("dir %q must be absolute", s.Dir)
	}
	if len(s.args()) == 0 {
		return bad("no command: give command, or an image with an entrypoint or cmd")
	}
	return nil
}

// expand gives one "addr:port/proto" string per protocol, for conflict checks.
func (k PortKey) expand() []string {
	var out []string
	a := "*"
	if k.Addr != nil {
		a = k.Addr.String()
	}
	for _, p := range k.Protos {
		out = append(out, fmt.Sprintf("%s:%d/%s", a, k.Port, p))
	}
	return out
}

// args is the process's argv.
func (s *Spec) args() []string {
	if len(s.Command) > 0 {
		return s.Command
	}
	if s.Image == nil {
		return nil
	}
	return append(append([]string(nil), s.Image.Entrypoint...), s.Image.Cmd...)
}

// env is the process's environment: PATH default, image env, then Spec.Env
// (sorted, so config.json is deterministic), then HOSTNAME.
func (s *Spec) env(hostname string) []string {
	m := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	var order []string
	order = append(order, "PATH")
	set := func(k, v string) {
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	if s.Image != nil {
		for _, e := range s.Image.Env {
			k, v, _ := strings.Cut(e, "=")
			set(k, v)
		}
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, s.Env[k])
	}
	if _, ok := m["HOSTNAME"]; !ok && hostname != "" {
		set("HOSTNAME", hostname)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+m[k])
	}
	return out
}

func (s *Spec) cwd() string {
	if s.Dir != "" {
		return s.Dir
	}
	if s.Image != nil && s.Image.WorkingDir != "" {
		return s.Image.WorkingDir
	}
	return "/"
}
