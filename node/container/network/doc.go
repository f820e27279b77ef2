// Package network is the host side of a container's network, done the way the
// CNI bridge plugin does it, with vishvananda/netlink and google/nftables
// instead of shelling out to ip(8) and nft(8):
//
//   - NewNetns/DeleteNetns: a network namespace bind-mounted on a file (the
//     path runc is given as the container's net namespace), so the network
//     exists before the process and outlives an agent restart;
//   - AttachVeth/DetachVeth: a veth pair, host end enslaved to a bridge, peer
//     moved into the namespace as eth0 with an address and a default route via
//     the bridge address;
//   - IPAM: one file per allocated address under a directory (host-local
//     style: O_EXCL create, so two allocators never hand out one address, and
//     a crash leaves at worst an address owned by a container the manager
//     later tears down);
//   - NAT: a zos-owned nftables table (family ip) with prerouting, output and
//     postrouting nat chains. Port forwards are DNAT rules in prerouting and
//     output (output is what makes a forward work from the host itself,
//     127.0.0.1 included, with route_localnet on the bridge and a masquerade
//     of 127.0.0.0/8 towards it). Every rule carries a tag in its UserData so
//     it can be found and deleted without keeping handles;
//   - Bridges/Netlink: the small interface the container manager gets its
//     bridge from, and the default implementation that creates a missing
//     bridge with an address and a masquerade rule for its range. The node
//     agent's bridge.create can provide its own.
//
// Every step has an undo that tolerates the thing being gone already, so a
// caller can roll back a half-done setup or clean up after a crash by calling
// all of them.
package network
