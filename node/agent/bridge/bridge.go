package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/node/agent"
)

// Alias marks bridges made by the agent.
const Alias = "zos-bridge"

// Args are bridge.create's arguments.
type Args struct {
	Name    string  `json:"name"`
	HWAddr  string  `json:"hwaddr"`
	Network Network `json:"network"`
}

// Network configures a bridge's addressing.
type Network struct {
	Mode     string   `json:"mode"` // none (default), static, dnsmasq
	NAT      bool     `json:"nat"`
	Settings Settings `json:"settings"`
}

// Settings of static and dnsmasq modes.
type Settings struct {
	CIDR  string `json:"cidr"`
	Start string `json:"start"`
	End   string `json:"end"`
}

// NameArgs name a bridge.
type NameArgs struct {
	Name string `json:"name"`
}

// Info describes a bridge (bridge.list).
type Info struct {
	Name    string   `json:"name"`
	HWAddr  string   `json:"hwaddr"`
	Up      bool     `json:"up"`
	Addrs   []string `json:"addrs"`
	Managed bool     `json:"managed"` // made by the agent
	NAT     bool     `json:"nat"`
	DHCP    bool     `json:"dhcp"`
}

// Config configures the bridge commands.
type Config struct {
	// RunDir holds dnsmasq lease files (default: a temporary directory).
	RunDir string
	Logger *slog.Logger
}

// Bridges owns the dnsmasq processes of the bridges it made.
type Bridges struct {
	cfg     Config
	log     *slog.Logger
	mu      sync.Mutex
	dnsmasq map[string]*exec.Cmd
	waited  map[string]chan struct{}
}

// Register adds bridge.create/list/delete to m.
func Register(m *agent.Manager, cfg Config) *Bridges {
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	if cfg.RunDir == "" {
		cfg.RunDir = filepath.Join(os.TempDir(), "zos-bridges")
	}
	b := &Bridges{cfg: cfg, log: cfg.Logger.With("component", "bridge"), dnsmasq: map[string]*exec.Cmd{}, waited: map[string]chan struct{}{}}
	m.Register("bridge.create", func(ctx context.Context, j *agent.Job) (any, error) {
		var a Args
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		return nil, b.Create(a)
	})
	m.Register("bridge.list", func(ctx context.Context, j *agent.Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		return b.List()
	})
	m.Register("bridge.delete", func(ctx context.Context, j *agent.Job) (any, error) {
		var a NameArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		return nil, b.Delete(a.Name)
	})
	return b
}

func checkName(name string) error {
	if name == "" || len(name) >= 16 {
		return agent.Argf("bridge name %q must be 1-15 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return agent.Argf("bridge name %q: only letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// Create makes the bridge, its address, NAT and DHCP. A failure undoes
// what was done.
func (b *Bridges) Create(a Args) (err error) {
	if err := checkName(a.Name); err != nil {
		return err
	}
	var hw net.HardwareAddr
	if a.HWAddr != "" {
		if hw, err = net.ParseMAC(a.HWAddr); err != nil {
			return agent.Argf("hwaddr: %v", err)
		}
	}
	var ip net.IP
	var subnet *net.IPNet
	switch a.Network.Mode {
	case "", "none":
		if a.Network.NAT {
			return agent.Argf("nat needs mode static or dnsmasq (a cidr)")
		}
	case "static", "dnsmasq":
		if ip, subnet, err = net.ParseCIDR(a.Network.Settings.CIDR); err != nil || ip.To4() == nil {
			return agent.Argf("settings.cidr %q: want the bridge's IPv4 address with a prefix, e.g. 10.10.0.1/24", a.Network.Settings.CIDR)
		}
	default:
		return agent.Argf("network.mode %q: want none, static or dnsmasq", a.Network.Mode)
	}
	if _, err := netlink.LinkByName(a.Name); err == nil {
		return fmt.Errorf("bridge %s: a link with that name exists", a.Name)
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.HardwareAddr = a.Name, hw
	br := &netlink.Bridge{LinkAttrs: la}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", a.Name, err)
	}
	defer func() {
		if err != nil {
			b.Delete(a.Name)
		}
	}()
	if err := netlink.LinkSetAlias(br, Alias); err != nil {
		return fmt.Errorf("bridge %s: set alias: %w", a.Name, err)
	}
	if ip != nil {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: subnet.Mask}}
		if err := netlink.AddrAdd(br, addr); err != nil {
			return fmt.Errorf("bridge %s: address %s: %w", a.Name, a.Network.Settings.CIDR, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s: up: %w", a.Name, err)
	}
	if a.Network.NAT {
		if err := addMasquerade(a.Name, subnet); err != nil {
			return err
		}
	}
	if a.Network.Mode == "dnsmasq" {
		if err := b.startDnsmasq(a.Name, ip, subnet, a.Network.Settings); err != nil {
			return err
		}
	}
	b.log.Info("bridge created", "bridge", a.Name, "mode", a.Network.Mode, "cidr", a.Network.Settings.CIDR, "nat", a.Network.NAT)
	return nil
}

func (b *Bridges) startDnsmasq(name string, ip net.IP, subnet *net.IPNet, s Settings) error {
	start, end := net.ParseIP(s.Start), net.ParseIP(s.End)
	if s.Start != "" && (start == nil || !subnet.Contains(start)) || s.End != "" && (end == nil || !subnet.Contains(end)) {
		return agent.Argf("settings.start/end must be addresses in %s", subnet)
	}
	if start == nil {
		start = addIP(subnet.IP, 2)
		if start.Equal(ip) {
			start = addIP(subnet.IP, 3)
		}
	}
	if end == nil {
		ones, bits := subnet.Mask.Size()
		end = addIP(subnet.IP, (1<<(bits-ones))-2)
	}
	path, err := exec.LookPath("dnsmasq")
	if err != nil {
		return fmt.Errorf("mode dnsmasq needs dnsmasq (Debian package dnsmasq-base): %w", err)
	}
	if err := os.MkdirAll(b.cfg.RunDir, 0o700); err != nil {
		return err
	}
	cmd := exec.Command(path, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--port=0", "--bind-interfaces", "--interface="+name, "--except-interface=lo",
		"--dhcp-range="+start.String()+","+end.String()+",1h", "--dhcp-option=option:router,"+ip.String(),
		"--dhcp-leasefile="+filepath.Join(b.cfg.RunDir, name+".leases"), "--pid-file=", "--user=root", "--log-facility=-")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dnsmasq for %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		b.log.Info("dnsmasq exited", "bridge", name, "err", err)
		close(done)
	}()
	// dnsmasq exits at once on a bad configuration.
	select {
	case <-done:
		return fmt.Errorf("dnsmasq for %s exited at start (%s)", name, cmd.ProcessState)
	case <-time.After(300 * time.Millisecond):
	}
	b.mu.Lock()
	b.dnsmasq[name], b.waited[name] = cmd, done
	b.mu.Unlock()
	return nil
}

func addIP(ip net.IP, n int) net.IP {
	v := new(big.Int).SetBytes(ip.To4())
	v.Add(v, big.NewInt(int64(n)))
	out := make(net.IP, 4)
	v.FillBytes(out)
	return out
}

func (b *Bridges) stopDnsmasq(name string) {
	b.mu.Lock()
	cmd, done := b.dnsmasq[name], b.waited[name]
	delete(b.dnsmasq, name)
	delete(b.waited, name)
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Delete removes a bridge made by the agent, its NAT rule and dnsmasq.
func (b *Bridges) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("no bridge %s", name)
		}
		return err
	}
	if l.Type() != "bridge" || l.Attrs().Alias != Alias {
		return fmt.Errorf("%s is not a bridge made by zos; refusing to delete it", name)
	}
	b.stopDnsmasq(name)
	if err := delMasquerade(name); err != nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	b.log.Info("bridge deleted", "bridge", name)
	return nil
}

// List returns the host's bridges.
func (b *Bridges) List() ([]Info, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := []Info{}
	for _, l := range links {
		if l.Type() != "bridge" {
			continue
		}
		a := l.Attrs()
		inf := Info{Name: a.Name, HWAddr: a.HardwareAddr.String(), Up: a.Flags&net.FlagUp != 0, Addrs: []string{}, Managed: a.Alias == Alias}
		if addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL); err == nil {
			for _, ad := range addrs {
				inf.Addrs = append(inf.Addrs, ad.IPNet.String())
			}
		}
		if inf.Managed {
			inf.NAT = hasMasquerade(a.Name)
			b.mu.Lock()
			inf.DHCP = b.dnsmasq[a.Name] != nil
			b.mu.Unlock()
		}
		out = append(out, inf)
	}
	return out, nil
}

// Close stops the dnsmasq processes (the bridges stay, as host state).
func (b *Bridges) Close() {
	b.mu.Lock()
	names := make([]string, 0, len(b.dnsmasq))
	for n := range b.dnsmasq {
		names = append(names, n)
	}
	b.mu.Unlock()
	for _, n := range names {
		b.stopDnsmasq(n)
	}
}
