package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoAddress: a range has no free address left.
var ErrNoAddress = errors.New("network: no free address in range")

// IPAM hands out IPv4 addresses of one range, one file per address in Dir
// (named by the address, holding the owner). Safe for concurrent use by any
// number of IPAMs, in any processes, over the same Dir.
type IPAM struct {
	Dir     string
	Net     *net.IPNet // the range
	Gateway net.IP     // never handed out
}

func ip4u(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }
func u2ip(u uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, u)
	return ip
}

// Allocate reserves a free address for owner.
func (a *IPAM) Allocate(owner string) (net.IP, error) {
	if a.Net == nil || a.Net.IP.To4() == nil {
		return nil, fmt.Errorf("network: ipam needs an IPv4 range")
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return nil, err
	}
	ones, bits := a.Net.Mask.Size()
	if bits-ones < 2 {
		return nil, fmt.Errorf("network: range %s too small", a.Net)
	}
	base := ip4u(a.Net.IP.Mask(a.Net.Mask))
	size := uint32(1) << (bits - ones)
	for off := uint32(1); off < size-1; off++ {
		ip := u2ip(base + off)
		if a.Gateway != nil && ip.Equal(a.Gateway) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(a.Dir, ip.String()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("network: ipam: %w", err)
		}
		_, werr := f.WriteString(owner)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(f.Name())
			return nil, fmt.Errorf("network: ipam: %w", werr)
		}
		return ip, nil
	}
	return nil, fmt.Errorf("%w %s", ErrNoAddress, a.Net)
}

// Release frees ip if owner holds it. Releasing a free address is not an error.
func (a *IPAM) Release(ip net.IP, owner string) error {
	p := filepath.Join(a.Dir, ip.String())
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != owner {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Owners lists the allocated addresses and their owners.
func (a *IPAM) Owners() (map[string]string, error) {
	ents, err := os.ReadDir(a.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range ents {
		if net.ParseIP(e.Name()) == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.Dir, e.Name()))
		if err == nil {
			out[e.Name()] = strings.TrimSpace(string(b))
		}
	}
	return out, nil
}
