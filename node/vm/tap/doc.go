// Package tap creates the host side of a VM's bridged NIC: a persistent tap
// device enslaved to a Linux bridge (EnsureBridge makes a bare one when the
// agent provides none; bridges are shared with other VMs and containers, so
// deleting a tap never touches its bridge), through netlink (github.com/vishvananda/netlink), following the steps of
// the CNI bridge plugin.
//
// The tap is persistent (TUNSETPERSIST) and created with IFF_NO_PI |
// IFF_VNET_HDR (and IFF_TUN_EXCL, so a name clash fails instead of sharing
// a tap), so qemu opens it by name (-netdev tap,ifname=…,script=no)
// and the agent may restart without the device going away under the guest.
// Delete removes it; deleting a tap that is already gone is not an error,
// so cleanup after a crash can simply call Delete again.
//
// Names are at most 15 bytes (IFNAMSIZ-1); Name derives a stable one from
// a VM name and NIC index so that a restarted agent finds its taps again.
package tap
