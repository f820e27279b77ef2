package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Spec describes a VM, in the shape of 0-core's kvm.create arguments
// (JSON field names are the wire names).
type Spec struct {
	// Name identifies the VM on the node: 1-64 of [A-Za-z0-9_.-], not
	// starting with a dot.
	Name string `json:"name"`
	// CPU is the number of vCPUs (1-64; 1 if 0).
	CPU int `json:"cpu"`
	// Memory is the guest RAM in MiB (at least 32).
	Memory int `json:"memory"`
	// Media are the disks, in order (disk0, disk1, …).
	Media []Media `json:"media"`
	// Kernel, Initrd and Cmdline boot a kernel directly (paths on the node).
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	// NICs are the network interfaces, in order.
	NICs []NIC `json:"nics"`
	// Port forwards host TCP port → guest port on the "default" NIC.
	Port map[string]int `json:"port,omitempty"`
	// Tags are free-form labels kept with the VM.
	Tags []string `json:"tags,omitempty"`
}

// Media is one disk of a VM.
type Media struct {
	// URL is nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH, or a
	// bare vdisk name served by the node's blockd (Config.LocalNBD).
	URL string `json:"url"`
	// Type is "disk" (default) or "cdrom" (read-only, IDE).
	Type string `json:"type,omitempty"`
	// Bus is "virtio" (default) or "ide".
	Bus string `json:"bus,omitempty"`
	// ReadOnly attaches the disk read-only: no read-write lease is taken.
	ReadOnly bool `json:"readonly,omitempty"`
	// IOTune throttles the disk; nil for none.
	IOTune *IOTune `json:"iotune,omitempty"`
}

// IOTune are the limits of qemu's block_set_io_throttle (0 = unlimited),
// in 0-core's (libvirt's) wire shape: each value with a "…set" flag. A
// value counts when its flag is set or it is non-zero.
type IOTune struct {
	TotalBytesSecSet bool  `json:"totalbytessecset,omitempty"`
	TotalBytesSec    int64 `json:"totalbytessec,omitempty"`
	ReadBytesSecSet  bool  `json:"readbytessecset,omitempty"`
	ReadBytesSec     int64 `json:"readbytessec,omitempty"`
	WriteBytesSecSet bool  `json:"writebytessecset,omitempty"`
	WriteBytesSec    int64 `json:"writebytessec,omitempty"`
	TotalIOPSSecSet  bool  `json:"totaliopssecset,omitempty"`
	TotalIOPSSec     int64 `json:"totaliopssec,omitempty"`
	ReadIOPSSecSet   bool  `json:"readiopssecset,omitempty"`
	ReadIOPSSec      int64 `json:"readiopssec,omitempty"`
	WriteIOPSSecSet  bool  `json:"writeiopssecset,omitempty"`
	WriteIOPSSec     int64 `json:"writeiopssec,omitempty"`
}

// effective drops the "set" flags: the limits qemu is given.
func (t IOTune) effective() IOTune {
	return IOTune{TotalBytesSec: t.TotalBytesSec, ReadBytesSec: t.ReadBytesSec, WriteBytesSec: t.WriteBytesSec,
		TotalIOPSSec: t.TotalIOPSSec, ReadIOPSSec: t.ReadIOPSSec, WriteIOPSSec: t.WriteIOPSSec}
}

// NIC is one network interface.
type NIC struct {
	// Type is "default" (qemu user networking, NAT, port forwards) or
	// "bridge" (a tap on bridge ID).
	Type string `json:"type"`
	// ID is the bridge name for "bridge" (Config.Bridge if empty).
	ID string `json:"id,omitempty"`
	// HWAddr is the guest MAC; derived from the VM name if empty.
	HWAddr string `json:"hwaddr,omitempty"`
	// IP is the guest's IPv4 address on a "bridge" NIC (the guest
	// configures it; zos only needs it for port forwards): a VM without a
	// "default" NIC has its Port forwards sent here (nftables DNAT, by the
	// agent).
	IP string `json:"ip,omitempty"`
}

// maxSpecBytes bounds a decoded Spec's JSON.
const maxSpecBytes = 1 << 20

// DecodeSpec parses a kvm.create argument object. Unknown fields are
// refused so that a typo does not silently drop a disk or limit.
func DecodeSpec(b []byte) (Spec, error) {
	var s Spec
	if len(b) > maxSpecBytes {
		return s, fmt.Errorf("%w: spec is %d bytes, max %d", ErrInvalid, len(b), maxSpecBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return Spec{}, fmt.Errorf("%w: trailing data after the spec", ErrInvalid)
	}
	return s, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$`)

// ValidName reports whether name is an acceptable VM name.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks s (after defaults) without touching the host.
func (s *Spec) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(f, a...)) }
	if !ValidName(s.Name) {
		return bad("name %q: want 1-64 of [A-Za-z0-9_.-], not starting with a dot", s.Name)
	}
	if s.CPU < 1 || s.CPU > 64 {
		return bad("cpu %d: want 1-64", s.CPU)
	}
	if s.Memory < 32 || s.Memory > 1<<20 {
		return bad("memory %d MiB: want 32 MiB to 1 TiB", s.Memory)
	}
	if len(s.Media) > 16 {
		return bad("%d media: at most 16", len(s.Media))
	}
	for i, m := range s.Media {
		if err := m.validate(); err != nil {
			return bad("media %d: %v", i, err)
		}
	}
	if s.Kernel == "" && (s.Initrd != "" || s.Cmdline != "") {
		return bad("initrd and cmdline need a kernel")
	}
	if s.Kernel == "" && len(s.Media) == 0 {
		return bad("nothing to boot: give media or a kernel")
	}
	for _, p := range []string{s.Kernel, s.Initrd} {
		if strings.ContainsAny(p, ",\x00") {
			return bad("path %q: commas and NULs are not allowed", p)
		}
	}
	if strings.ContainsRune(s.Cmdline, 0) {
		return bad("cmdline holds a NUL")
	}
	if len(s.NICs) > 8 {
		return bad("%d nics: at most 8", len(s.NICs))
	}
	hasDefault, hasIP := false, false
	for i, n := range s.NICs {
		switch n.Type {
		case "default":
			hasDefault = true
		case "bridge":
			if n.ID != "" && !ifnameRE.MatchString(n.ID) {
				return bad("nic %d: bridge name %q: want 1-15 of [A-Za-z0-9_.-]", i, n.ID)
			}
		default:
			return bad("nic %d: type %q: want default or bridge", i, n.Type)
		}
		if n.IP != "" {
			if ip := net.ParseIP(n.IP); ip == nil || ip.To4() == nil || n.Type != "bridge" {
				return bad("nic %d: ip %q: want the IPv4 address of a bridge nic's guest", i, n.IP)
			}
			hasIP = true
		}
		if n.HWAddr != "" {
			if hw, err := net.ParseMAC(n.HWAddr); err != nil || len(hw) != 6 {
				return bad("nic %d: hwaddr %q is not a MAC address", i, n.HWAddr)
			}
		}
	}
	if len(s.Port) > 0 && !hasDefault && !hasIP {
		return bad("port forwards need a default nic, or a bridge nic with the guest's ip")
	}
	for h, g := range s.Port {
		hp, err := strconv.Atoi(h)
		if err != nil || hp < 1 || hp > 65535 || g < 1 || g > 65535 {
			return bad("port %q:%d: want host and guest ports 1-65535", h, g)
		}
	}
	return nil
}

var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

func (m Media) validate() error {
	switch m.Type {
	case "", "disk", "cdrom":
	default:
		return fmt.Errorf("type %q: want disk or cdrom", m.Type)
	}
	switch m.Bus {
	case "", "virtio", "ide":
	default:
		return fmt.Errorf("bus %q: want virtio or ide", m.Bus)
	}
	if m.Type == "cdrom" && m.Bus == "virtio" {
		return fmt.Errorf("a cdrom is on the ide bus")
	}
	if _, err := parseNBD(m.URL, "127.0.0.1:10809"); err != nil {
		return err
	}
	if t := m.IOTune; t != nil {
		for _, v := range []int64{t.TotalBytesSec, t.ReadBytesSec, t.WriteBytesSec, t.TotalIOPSSec, t.ReadIOPSSec, t.WriteIOPSSec} {
			if v < 0 {
				return fmt.Errorf("iotune: negative limit %d", v)
			}
		}
		if (t.TotalBytesSec != 0 && (t.ReadBytesSec != 0 || t.WriteBytesSec != 0)) ||
			(t.TotalIOPSSec != 0 && (t.ReadIOPSSec != 0 || t.WriteIOPSSec != 0)) {
			return fmt.Errorf("iotune: a total limit excludes read and write limits")
		}
	}
	return nil
}

// nbdTarget is a parsed NBD disk location.
type nbdTarget struct {
	Host, Port string // inet
	Socket     string // unix
	Export     string
}

// URL is the canonical nbd URL of t.
func (t nbdTarget) URL() string {
	if t.Socket != "" {
		return "nbd+unix:///" + t.Export + "?socket=" + t.Socket
	}
	return "nbd://" + net.JoinHostPort(t.Host, t.Port) + "/" + t.Export
}

// blockdev is t as qemu's blockdev-add "nbd" driver options.
func (t nbdTarget) blockdev(node string) map[string]any {
	var server map[string]any
	if t.Socket != "" {
		server = map[string]any{"type": "unix", "path": t.Socket}
	} else {
		server = map[string]any{"type": "inet", "host": t.Host, "port": t.Port}
	}
	return map[string]any{"driver": "nbd", "node-name": node, "server": server, "export": t.Export,
		"cache": map[string]any{"direct": false, "no-flush": false}}
}

var exportRE = regexp.MustCompile(`^[A-Za-z0-9_.@:+-]{1,255}$`)

// parseNBD parses a Media URL; a bare name is an export of local.
func parseNBD(s, local string) (nbdTarget, error) {
	if s == "" {
		return nbdTarget{}, fmt.Errorf("empty url")
	}
	if !strings.Contains(s, "://") {
		if !exportRE.MatchString(s) {
			return nbdTarget{}, fmt.Errorf("vdisk name %q: want 1-255 of [A-Za-z0-9_.@:+-]", s)
		}
		host, port, err := net.SplitHostPort(local)
		if err != nil {
			return nbdTarget{}, fmt.Errorf("local NBD address %q: %v", local, err)
		}
		return nbdTarget{Host: host, Port: port, Export: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nbdTarget{}, fmt.Errorf("url %q: %v", s, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	if export == "" || !exportRE.MatchString(export) {
		return nbdTarget{}, fmt.Errorf("url %q: want an export name after the host, e.g. nbd://127.0.0.1:10809/VDISK", s)
	}
	if u.User != nil || u.Fragment != "" {
		return nbdTarget{}, fmt.Errorf("url %q: user info and fragments are not supported", s)
	}
	switch u.Scheme {
	case "nbd":
		if u.RawQuery != "" {
			return nbdTarget{}, fmt.Errorf("url %q: no query parameters for nbd://", s)
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return nbdTarget{}, fmt.Errorf("url %q: no host", s)
		}
		if port == "" {
			port = "10809"
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nbdTarget{}, fmt.Errorf("url %q: bad port", s)
		}
		if strings.ContainsAny(host, ",= \x00") {
			return nbdTarget{}, fmt.Errorf("url %q: bad host", s)
		}
		return nbdTarget{Host: host, Port: port, Export: export}, nil
	case "nbd+unix":
		if u.Host != "" {
			return nbdTarget{}, fmt.Errorf("url %q: nbd+unix takes no host", s)
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil || len(q) != 1 || len(q["socket"]) != 1 || !strings.HasPrefix(q.Get("socket"), "/") {
			return nbdTarget{}, fmt.Errorf("url %q: want ?socket=/absolute/path", s)
		}
		if strings.ContainsAny(q.Get("socket"), ",\x00") {
			return nbdTarget{}, fmt.Errorf("url %q: bad socket path", s)
		}
		return nbdTarget{Socket: q.Get("socket"), Export: export}, nil
	default:
		return nbdTarget{}, fmt.Errorf("url %q: scheme %q: want nbd:// or nbd+unix://", s, u.Scheme)
	}
}
