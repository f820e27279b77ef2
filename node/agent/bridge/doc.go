// Package bridge adds the node agent's bridge commands, with 0-core's
// names and argument shapes:
//
//	bridge.create {name, hwaddr, network: {mode: none|static|dnsmasq, nat, settings: {cidr, start, end}}}
//	bridge.list
//	bridge.delete {name}
//
// Bridges are made with netlink (vishvananda/netlink) and marked with the
// interface alias "zos-bridge"; bridge.delete refuses bridges without it,
// so the agent never removes a bridge it did not make. Mode static puts
// cidr (the bridge's own address, e.g. 10.10.0.1/24) on the bridge;
// dnsmasq does the same and runs dnsmasq as a DHCP server for the range
// (start..end, default the rest of the subnet) as a process the agent
// owns, stopped on delete and at shutdown. nat masquerades traffic from
// the subnet leaving through another interface: one rule per bridge, tagged
// with the bridge's name, in the nftables table "ip zos", chain
// "postrouting" (google/nftables), the table removed with its last rule.
// Port forwards (DNAT, a later issue) belong in the same table (TableName),
// in a "prerouting" chain, tagged the same way.
//
//	b := bridge.Register(manager, bridge.Config{RunDir: dir})
//	defer b.Close()
package bridge
