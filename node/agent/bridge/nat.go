package bridge

import (
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family ip) of every zos NAT rule.
const TableName = "zos"

// natTable returns the zos table and its postrouting nat chain, created if
// missing.
func natChain(c *nftables.Conn) (*nftables.Table, *nftables.Chain) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName})
	ch := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	return t, ch
}

func ruleTag(bridge string) []byte { return []byte("zos-bridge:" + bridge) }

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// addMasquerade masquerades packets from subnet leaving through an
// interface other than the bridge. It replaces an earlier rule of the
// bridge.
func addMasquerade(bridge string, subnet *net.IPNet) error {
	if subnet.IP.To4() == nil {
		return fmt.Errorf("nat: %s is not an IPv4 subnet", subnet)
	}
	if err := delMasquerade(bridge); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t, ch := natChain(c)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, UserData: ruleTag(bridge), Exprs: []expr.Any{
		// ip saddr & mask == network
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: subnet.Mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: subnet.IP.To4()},
		// oifname != bridge
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(bridge)},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: add masquerade for %s: %w", bridge, err)
	}
	// Forwarding must be on for NAT to route anything.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip_forward: %w", err)
	}
	return nil
}

// delMasquerade removes the bridge's rule, if any.
func delMasquerade(bridge string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "postrouting", Table: t})
	if err != nil {
		return nil // no table or chain yet: nothing to remove
	}
	found := false
	for _, r := range rules {
		if string(r.UserData) == string(ruleTag(bridge)) {
			if err := c.DelRule(r); err != nil {
				return err
			}
			found = true
		}
	}
	if !found {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete masquerade of %s: %w", bridge, err)
	}
	dropEmptyTable(c, t)
	return nil
}

// dropEmptyTable removes the zos table once none of its chains holds a
// rule, so a host without zos bridges carries no zos state.
func dropEmptyTable(c *nftables.Conn, t *nftables.Table) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		if rules, err := c.GetRules(t, ch); err != nil || len(rules) > 0 {
			return
		}
	}
	c.DelTable(t)
	c.Flush()
}

// hasMasquerade reports whether the bridge has a NAT rule.
func hasMasquerade(bridge string) bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "postrouting", Table: t})
	if err != nil {
		return false
	}
	for _, r := range rules {
		if string(r.UserData) == string(ruleTag(bridge)) {
			return true
		}
	}
	return false
}
