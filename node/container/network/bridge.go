package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
)

// Bridge is a Linux bridge containers plug into: its name, its address (the
// containers' gateway) and the range addresses come from.
type Bridge struct {
	Name    string
	Gateway net.IP
	Net     *net.IPNet
}

// Bridges gives a bridge by name, ready to plug veths into. Implementations
// may create it. The node agent's bridge.create provides one; Netlink is the
// default.
type Bridges interface {
	Bridge(ctx context.Context, name string) (Bridge, error)
}

// Netlink finds bridges with netlink, and creates the ones named in Create
// (name → gateway CIDR such as "172.18.0.1/16") when they are missing, with a
// masquerade rule for their range in NAT.
type Netlink struct {
	Create map[string]string
	NAT    *NAT // where the masquerade rule goes; nil: none
	// Forwarding sets net.ipv4.ip_forward=1 when a bridge is created (what
	// outbound NAT and forwards from other hosts need). Host-wide.
	Forwarding bool

	// mu serialises lookups and creation: containers created in parallel
	// must not see a bridge another is still setting up (no address yet),
	// nor have it deleted under them by that one's rollback.
	mu sync.Mutex
}

// Bridge implements Bridges.
func (n *Netlink) Bridge(ctx context.Context, name string) (Bridge, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		cidr, ok := n.Create[name]
		if !ok {
			return Bridge{}, fmt.Errorf("network: bridge %s does not exist (create it first)", name)
		}
		return n.create(name, cidr)
	}
	if err != nil {
		return Bridge{}, fmt.Errorf("network: bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return Bridge{}, fmt.Errorf("network: %s is a %s, not a bridge", name, l.Type())
	}
	return readBridge(l)
}

func readBridge(l netlink.Link) (Bridge, error) {
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return Bridge{}, fmt.Errorf("network: bridge %s addresses: %w", l.Attrs().Name, err)
	}
	if len(addrs) == 0 {
		return Bridge{}, fmt.Errorf("network: bridge %s has no IPv4 address", l.Attrs().Name)
	}
	a := addrs[0]
	return Bridge{Name: l.Attrs().Name, Gateway: a.IP.To4(), Net: &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}}, nil
}

func (n *Netlink) create(name, cidr string) (b Bridge, err error) {
	ip, ipn, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return Bridge{}, fmt.Errorf("network: bridge %s: bad cidr %q", name, cidr)
	}
	if ones, _ := ipn.Mask.Size(); ones > 30 {
		return Bridge{}, fmt.Errorf("network: bridge %s: cidr %s too small", name, cidr)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, os.ErrExist) {
		return Bridge{}, fmt.Errorf("network: create bridge %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			DeleteBridge(name, n.NAT)
		}
	}()
	l, err := netlink.LinkByName(name)
	if err != nil {
		return Bridge{}, err
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: ipn.Mask}}); err != nil && !errors.Is(err, os.ErrExist) {
		return Bridge{}, fmt.Errorf("network: bridge %s address: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return Bridge{}, fmt.Errorf("network: bridge %s up: %w", name, err)
	}
	if n.NAT != nil {
		if err := n.NAT.Masquerade(name, ipn); err != nil {
			return Bridge{}, err
		}
	}
	if n.Forwarding {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return Bridge{}, fmt.Errorf("network: ip_forward: %w", err)
		}
	}
	return Bridge{Name: name, Gateway: ip.To4(), Net: ipn}, nil
}

// DeleteBridge removes a bridge and its rules in nat (nil: none). A missing
// bridge is not an error.
func DeleteBridge(name string, nat *NAT) error {
	var errs []error
	if nat != nil {
		errs = append(errs, nat.DeleteTagged(bridgeTag(name)))
	}
	if l, err := netlink.LinkByName(name); err == nil {
		errs = append(errs, netlink.LinkDel(l))
	}
	return errors.Join(errs...)
}

// SetRouteLocalnet lets packets with a 127.0.0.0/8 source leave through the
// bridge (after a DNAT from the host's loopback; the masquerade rule of
// NAT.Loopback rewrites the source on the way out).
func SetRouteLocalnet(bridge string) error {
	p := fmt.Sprintf("/proc/sys/net/ipv4/conf/%s/route_localnet", bridge)
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("network: route_localnet on %s: %w", bridge, err)
	}
	return nil
}
