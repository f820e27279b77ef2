package network

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Proto is a transport protocol of a forward.
type Proto string

const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// Forward sends traffic for (HostAddr or any local address, HostPort, Proto)
// to To:ToPort.
type Forward struct {
	HostAddr net.IP // nil: any local address of the host
	HostPort uint16
	Proto    Proto
	To       net.IP
	ToPort   uint16
}

// NAT is a zos-owned nftables table (family ip). The zero value is not
// usable; use NewNAT. Safe for concurrent use.
type NAT struct {
	table string
	mu    sync.Mutex
}

// NewNAT makes sure table exists with its three nat chains.
func NewNAT(table string) (*NAT, error) {
	n := &NAT{table: table}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("network: nftables: %w", err)
	}
	t := n.t()
	c.AddTable(t)
	for _, ch := range n.chains() {
		c.AddChain(ch)
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("network: nftables table %s: %w", table, err)
	}
	return n, nil
}

// Table is the table's name.
func (n *NAT) Table() string { return n.table }

func (n *NAT) t() *nftables.Table {
	return &nftables.Table{Name: n.table, Family: nftables.TableFamilyIPv4}
}

func (n *NAT) chain(name string) *nftables.Chain {
	for _, c := range n.chains() {
		if c.Name == name {
			return c
		}
	}
	panic(name)
}

func (n *NAT) chains() []*nftables.Chain {
	t := n.t()
	return []*nftables.Chain{
		{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest},
		{Name: "output", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest},
		{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource},
	}
}

// Delete removes the whole table. A missing table is not an error.
func (n *NAT) Delete() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(n.t())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("network: delete table %s: %w", n.table, err)
	}
	return nil
}

func bridgeTag(name string) string { return "bridge:" + name }

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

func cidrMatch(ipn *net.IPNet, offset uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ipn.Mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ipn.IP.Mask(ipn.Mask).To4()},
	}
}

func oif(op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Masquerade adds the bridge's outbound NAT: ip saddr CIDR oifname != BRIDGE
// masquerade. Idempotent.
func (n *NAT) Masquerade(bridge string, ipn *net.IPNet) error {
	return n.ensure(bridgeTag(bridge), "postrouting",
		cat(cidrMatch(ipn, 12), oif(expr.CmpOpNeq, bridge), []expr.Any{&expr.Masq{}}))
}

// Loopback adds what a forward needs to work from the host itself and from
// containers on the bridge: sources 127.0.0.0/8 and (after a DNAT) the
// bridge's own range are masqueraded towards the bridge. Idempotent.
func (n *NAT) Loopback(bridge string, ipn *net.IPNet) error {
	lo := &net.IPNet{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}
	if err := n.ensure("loopback:"+bridge, "postrouting",
		cat(oif(expr.CmpOpEq, bridge), cidrMatch(lo, 12), []expr.Any{&expr.Masq{}})); err != nil {
		return err
	}
	dnat := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(0x20 /* IPS_DST_NAT */), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
	return n.ensure("hairpin:"+bridge, "postrouting",
		cat(oif(expr.CmpOpEq, bridge), cidrMatch(ipn, 12), dnat, []expr.Any{&expr.Masq{}}))
}

// ensure adds a rule tagged tag to chain unless one is there.
func (n *NAT) ensure(tag, chain string, exprs []expr.Any) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	rules, err := c.GetRules(n.t(), n.chain(chain))
	if err != nil {
		return fmt.Errorf("network: list %s/%s: %w", n.table, chain, err)
	}
	for _, r := range rules {
		if string(r.UserData) == tag {
			return nil
		}
	}
	c.AddRule(&nftables.Rule{Table: n.t(), Chain: n.chain(chain), Exprs: exprs, UserData: []byte(tag)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: add rule %s: %w", tag, err)
	}
	return nil
}

func (f Forward) exprs() ([]expr.Any, error) {
	to := f.To.To4()
	if to == nil || f.HostPort == 0 || f.ToPort == 0 {
		return nil, fmt.Errorf("network: bad forward %+v", f)
	}
	var proto byte
	switch f.Proto {
	case TCP:
		proto = unix.IPPROTO_TCP
	case UDP:
		proto = unix.IPPROTO_UDP
	default:
		return nil, fmt.Errorf("network: bad protocol %q", f.Proto)
	}
	var dst []expr.Any
	if f.HostAddr != nil {
		a := f.HostAddr.To4()
		if a == nil {
			return nil, fmt.Errorf("network: forward address %s is not IPv4", f.HostAddr)
		}
		dst = []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a},
		}
	} else {
		dst = []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		}
	}
	return cat(dst, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(f.HostPort)},
		&expr.Immediate{Register: 1, Data: to},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(f.ToPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}), nil
}

// AddForward adds f's DNAT rules to prerouting and output, tagged tag
// (one flush: both or neither).
func (n *NAT) AddForward(tag string, f Forward) error {
	ex, err := f.exprs()
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	for _, ch := range []string{"prerouting", "output"} {
		c.AddRule(&nftables.Rule{Table: n.t(), Chain: n.chain(ch), Exprs: ex, UserData: []byte(tag)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: add forward %s: %w", tag, err)
	}
	return nil
}

// DeleteTagged deletes every rule whose tag is tag or starts with tag+"/".
func (n *NAT) DeleteTagged(tag string) error {
	return n.deleteWhere(func(t string) bool { return t == tag || strings.HasPrefix(t, tag+"/") })
}

func (n *NAT) deleteWhere(match func(string) bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	found := false
	for _, ch := range n.chains() {
		rules, err := c.GetRules(n.t(), ch)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("network: list %s/%s: %w", n.table, ch.Name, err)
		}
		for _, r := range rules {
			if match(string(r.UserData)) {
				if err := c.DelRule(r); err != nil {
					return err
				}
				found = true
			}
		}
	}
	if !found {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: delete rules: %w", err)
	}
	return nil
}

// Tags lists the tags of the table's rules, one per rule.
func (n *NAT) Tags() ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ch := range n.chains() {
		rules, err := c.GetRules(n.t(), ch)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			out = append(out, string(r.UserData))
		}
	}
	return out, nil
}

// DeleteTaggedExcept deletes rules whose tag starts with prefix but whose
// next path element is not in keep (reconciling after a restart).
func (n *NAT) DeleteTaggedExcept(prefix string, keep map[string]bool) error {
	return n.deleteWhere(func(t string) bool {
		rest, ok := strings.CutPrefix(t, prefix)
		if !ok {
			return false
		}
		id, _, _ := strings.Cut(rest, "/")
		return !keep[id]
	})
}
