package corex

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/container/network"
)

var errBadBridge = errors.New("corex: bad bridge")

type cidrKey struct{ bridge string }

// withCIDR carries the cidr a create gives for a bridge to the provider.
func withCIDR(ctx context.Context, bridge, cidr string) context.Context {
	return context.WithValue(ctx, cidrKey{bridge}, cidr)
}

// bridges gives the container manager its bridges, making missing ones
// with bridge.create's code (static address, NAT).
type bridges struct {
	b         *bridge.Bridges
	def, cidr string
	mu        sync.Mutex
}

func (p *bridges) Bridge(ctx context.Context, name string) (network.Bridge, error) {
	// One at a time: a bridge being made exists before it has its
	// address, and a concurrent create must not read it then.
	p.mu.Lock()
	defer p.mu.Unlock()
	nl := &network.Netlink{}
	var nf netlink.LinkNotFoundError
	if _, err := netlink.LinkByName(name); !errors.As(err, &nf) {
		return nl.Bridge(ctx, name)
	}
	cidr, _ := ctx.Value(cidrKey{name}).(string)
	if cidr == "" && name == p.def {
		cidr = p.cidr
	}
	if cidr == "" {
		return network.Bridge{}, fmt.Errorf("%w: bridge %s does not exist (bridge.create it, or give the nic config.cidr)", errBadBridge, name)
	}
	if p.b == nil {
		return network.Bridge{}, fmt.Errorf("corex: bridge %s does not exist and this agent cannot create bridges", name)
	}
	if _, err := netlink.LinkByName(name); errors.As(err, &nf) {
		if err := p.b.Create(bridge.Args{Name: name, Network: bridge.Network{Mode: "static", NAT: true,
			Settings: bridge.Settings{CIDR: cidr}}}); err != nil {
			return network.Bridge{}, err
		}
		// Outbound NAT and forwards from other hosts route through the host.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return network.Bridge{}, fmt.Errorf("corex: ip_forward: %w", err)
		}
	}
	return nl.Bridge(ctx, name)
}
