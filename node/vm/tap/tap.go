package tap

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// Name returns the tap name for NIC index i of VM vm: "zt" + 10 hex digits
// of a hash of both, plus the index (stable across agent restarts).
func Name(vm string, i int) string {
	h := sha256.Sum256([]byte(vm))
	return fmt.Sprintf("zt%s%d", hex.EncodeToString(h[:])[:10], i%100)
}

// EnsureBridge returns bridge name, creating it (up) if it does not exist.
func EnsureBridge(name string) (*netlink.Bridge, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if l, err := netlink.LinkByName(name); err == nil {
		br, ok := l.(*netlink.Bridge)
		if !ok {
			return nil, fmt.Errorf("tap: %s exists and is a %s, not a bridge", name, l.Type())
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("tap: set bridge %s up: %w", name, err)
		}
		return br, nil
	} else if !isNotFound(err) {
		return nil, fmt.Errorf("tap: look up bridge %s: %w", name, err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("tap: create bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		netlink.LinkDel(br)
		return nil, fmt.Errorf("tap: set bridge %s up: %w", name, err)
	}
	return br, nil
}

// Create makes a persistent tap named name on bridge (which must exist; see
// EnsureBridge) and sets it up. On error nothing is left behind.
func Create(name, bridge string) error {
	if err := validName(name); err != nil {
		return err
	}
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("tap: bridge %s: %w", bridge, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return fmt.Errorf("tap: %s is a %s, not a bridge", bridge, l.Type())
	}
	t := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE | netlink.TUNTAP_TUN_EXCL,
	}
	if err := netlink.LinkAdd(t); err != nil {
		return fmt.Errorf("tap: create %s: %w", name, err)
	}
	for _, fd := range t.Fds {
		fd.Close()
	}
	undo := func(err error) error {
		Delete(name)
		return err
	}
	l, err = netlink.LinkByName(name)
	if err != nil {
		return undo(fmt.Errorf("tap: look up %s: %w", name, err))
	}
	if err := netlink.LinkSetMaster(l, br); err != nil {
		return undo(fmt.Errorf("tap: attach %s to bridge %s: %w", name, bridge, err))
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return undo(fmt.Errorf("tap: set %s up: %w", name, err))
	}
	return nil
}

// Exists reports whether a link called name exists.
func Exists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// Master returns the name of the bridge tap name is enslaved to ("" if none).
func Master(name string) (string, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return "", err
	}
	if l.Attrs().MasterIndex == 0 {
		return "", nil
	}
	m, err := netlink.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		return "", err
	}
	return m.Attrs().Name, nil
}

// Delete removes tap name; a missing tap is not an error.
func Delete(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("tap: look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("tap: delete %s: %w", name, err)
	}
	return nil
}

// DeleteBridge removes bridge name if it exists (for tests and explicit
// bridge.delete; VMs never delete their bridge).
func DeleteBridge(name string) error { return Delete(name) }

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func validName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("tap: interface name %q must be 1-15 bytes", name)
	}
	for _, c := range name {
		if c == '/' || c == ' ' || c == ':' || c < 0x21 || c > 0x7e {
			return fmt.Errorf("tap: interface name %q has a bad character %q", name, c)
		}
	}
	return nil
}
