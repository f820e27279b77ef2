package network

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Attachment is what AttachVeth needs: the host end's name, the namespace,
// the bridge to enslave to and the address to give eth0.
type Attachment struct {
	HostName string // host end of the pair, ≤ 15 bytes
	Netns    string // path of the namespace (NewNetns)
	Bridge   Bridge // where the host end goes
	Addr     net.IP // container address inside Bridge.Net
	IfName   string // name inside the namespace, default eth0
	MTU      int    // default: the bridge's
}

// AttachVeth creates the pair, moves the peer into the namespace and
// configures it. On error nothing it made is left.
func AttachVeth(a Attachment) (err error) {
	if len(a.HostName) == 0 || len(a.HostName) > 15 {
		return fmt.Errorf("network: bad veth name %q", a.HostName)
	}
	if a.IfName == "" {
		a.IfName = "eth0"
	}
	br, err := netlink.LinkByName(a.Bridge.Name)
	if err != nil {
		return fmt.Errorf("network: bridge %s: %w", a.Bridge.Name, err)
	}
	mtu := a.MTU
	if mtu == 0 {
		mtu = br.Attrs().MTU
	}
	ns, err := netns.GetFromPath(a.Netns)
	if err != nil {
		return fmt.Errorf("network: open netns %s: %w", a.Netns, err)
	}
	defer ns.Close()
	peer := "zp" + a.HostName[min(2, len(a.HostName)):]
	if len(peer) > 15 {
		peer = peer[:15]
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: a.HostName, MTU: mtu, MasterIndex: br.Attrs().Index},
		PeerName:  peer,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("network: add veth %s: %w", a.HostName, err)
	}
	defer func() {
		if err != nil {
			DetachVeth(a.HostName)
		}
	}()
	pl, err := netlink.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("network: veth peer: %w", err)
	}
	if err := netlink.LinkSetNsFd(pl, int(ns)); err != nil {
		return fmt.Errorf("network: move veth into netns: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("network: netlink in netns: %w", err)
	}
	defer h.Close()
	in, err := h.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("network: veth peer in netns: %w", err)
	}
	if err := h.LinkSetName(in, a.IfName); err != nil {
		return fmt.Errorf("network: rename veth peer: %w", err)
	}
	ones, _ := a.Bridge.Net.Mask.Size()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr, Mask: net.CIDRMask(ones, 32)}}
	if err := h.AddrAdd(in, addr); err != nil {
		return fmt.Errorf("network: address %s: %w", addr, err)
	}
	if err := h.LinkSetUp(in); err != nil {
		return fmt.Errorf("network: eth0 up: %w", err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("network: lo up: %w", err)
		}
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Gw: a.Bridge.Gateway}); err != nil {
		return fmt.Errorf("network: default route via %s: %w", a.Bridge.Gateway, err)
	}
	host, err := netlink.LinkByName(a.HostName)
	if err != nil {
		return fmt.Errorf("network: veth %s: %w", a.HostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("network: veth %s up: %w", a.HostName, err)
	}
	return nil
}

// DetachVeth deletes the pair by its host end. A missing link is not an error.
func DetachVeth(hostName string) error {
	l, err := netlink.LinkByName(hostName)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("network: veth %s: %w", hostName, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("network: delete veth %s: %w", hostName, err)
	}
	return nil
}

// LinkExists reports whether a link of that name exists in the host namespace.
func LinkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}
