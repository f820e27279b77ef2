package info

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/zosproject/zos/node/agent"
)

// Register adds the info.* and disk.* commands to m.
func Register(m *agent.Manager) {
	noArgs := func(f func() (any, error)) agent.Handler {
		return func(ctx context.Context, j *agent.Job) (any, error) {
			if err := j.Decode(&struct{}{}); err != nil {
				return nil, err
			}
			return f()
		}
	}
	m.Register("info.cpu", noArgs(func() (any, error) { return CPU() }))
	m.Register("info.mem", noArgs(func() (any, error) { return Mem() }))
	m.Register("info.disk", noArgs(func() (any, error) { return Disk() }))
	m.Register("info.nic", noArgs(func() (any, error) { return NICs() }))
	m.Register("info.os", noArgs(func() (any, error) { return OS() }))
	m.Register("info.port", noArgs(func() (any, error) { return Ports() }))
	m.Register("info.version", noArgs(func() (any, error) {
		return map[string]string{"version": m.Version(), "go": runtime.Version()}, nil
	}))
	m.Register("disk.list", noArgs(func() (any, error) { return BlockDevices() }))
	m.Register("disk.mounts", noArgs(func() (any, error) { return Mounts() }))
}

// CPUInfo is one logical CPU.
type CPUInfo struct {
	CPU       uint     `json:"cpu"`
	VendorID  string   `json:"vendorId"`
	Family    string   `json:"family"`
	Model     string   `json:"model"`
	ModelName string   `json:"modelName"`
	Cores     uint     `json:"cores"`
	Mhz       float64  `json:"mhz"`
	CacheSize string   `json:"cacheSize"`
	Flags     []string `json:"flags"`
}

// CPU lists the logical CPUs (/proc/cpuinfo).
func CPU() ([]CPUInfo, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, err
	}
	cs, err := fs.CPUInfo()
	if err != nil {
		return nil, err
	}
	out := make([]CPUInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, CPUInfo{CPU: c.Processor, VendorID: c.VendorID, Family: c.CPUFamily, Model: c.Model,
			ModelName: c.ModelName, Cores: c.CPUCores, Mhz: c.CPUMHz, CacheSize: c.CacheSize, Flags: c.Flags})
	}
	return out, nil
}

// MemInfo is the host's memory, in bytes.
type MemInfo struct {
	Total       uint64  `json:"total"`
	Available   uint64  `json:"available"`
	Used        uint64  `json:"used"`
	UsedPercent float64 `json:"usedPercent"`
	Free        uint64  `json:"free"`
	Buffers     uint64  `json:"buffers"`
	Cached      uint64  `json:"cached"`
	SwapTotal   uint64  `json:"swapTotal"`
	SwapFree    uint64  `json:"swapFree"`
}

// Mem reads /proc/meminfo.
func Mem() (MemInfo, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return MemInfo{}, err
	}
	mi, err := fs.Meminfo()
	if err != nil {
		return MemInfo{}, err
	}
	v := func(p *uint64) uint64 {
		if p == nil {
			return 0
		}
		return *p * 1024
	}
	out := MemInfo{Total: v(mi.MemTotal), Available: v(mi.MemAvailable), Free: v(mi.MemFree), Buffers: v(mi.Buffers),
		Cached: v(mi.Cached), SwapTotal: v(mi.SwapTotal), SwapFree: v(mi.SwapFree)}
	out.Used = out.Total - out.Available
	if out.Total > 0 {
		out.UsedPercent = 100 * float64(out.Used) / float64(out.Total)
	}
	return out, nil
}

// DiskUsage is one mounted file system backed by a device.
type DiskUsage struct {
	Device     string  `json:"device"`
	Mountpoint string  `json:"mountpoint"`
	Fstype     string  `json:"fstype"`
	Opts       string  `json:"opts"`
	Total      uint64  `json:"total"`
	Free       uint64  `json:"free"`
	Used       uint64  `json:"used"`
	UsedPct    float64 `json:"usedPercent"`
}

// Disk lists the mounted block-device file systems with their usage.
func Disk() ([]DiskUsage, error) {
	ms, err := Mounts()
	if err != nil {
		return nil, err
	}
	out := []DiskUsage{}
	for _, m := range ms {
		if !strings.HasPrefix(m.Source, "/dev/") {
			continue
		}
		d := DiskUsage{Device: m.Source, Mountpoint: m.Mountpoint, Fstype: m.Fstype, Opts: m.Options}
		var st unix.Statfs_t
		if unix.Statfs(m.Mountpoint, &st) == nil {
			d.Total = st.Blocks * uint64(st.Bsize)
			d.Free = st.Bavail * uint64(st.Bsize)
			d.Used = d.Total - st.Bfree*uint64(st.Bsize)
			if d.Total > 0 {
				d.UsedPct = 100 * float64(d.Used) / float64(d.Total)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// NIC is one network interface.
type NIC struct {
	Name     string   `json:"name"`
	Hardware string   `json:"hardwareaddr"`
	MTU      int      `json:"mtu"`
	Flags    []string `json:"flags"`
	Addrs    []string `json:"addrs"`
	Speed    int      `json:"speed"` // Mb/s, 0 when unknown
}

// NICs lists the network interfaces and their addresses.
func NICs() ([]NIC, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]NIC, 0, len(ifs))
	for _, i := range ifs {
		n := NIC{Name: i.Name, Hardware: i.HardwareAddr.String(), MTU: i.MTU, Flags: strings.Split(i.Flags.String(), "|"), Addrs: []string{}}
		if as, err := i.Addrs(); err == nil {
			for _, a := range as {
				n.Addrs = append(n.Addrs, a.String())
			}
		}
		if b, err := os.ReadFile(filepath.Join("/sys/class/net", i.Name, "speed")); err == nil {
			n.Speed, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			n.Speed = max(n.Speed, 0)
		}
		out = append(out, n)
	}
	return out, nil
}

// OSInfo describes the host.
type OSInfo struct {
	Hostname      string `json:"hostname"`
	OS            string `json:"os"`
	Platform      string `json:"platform"`
	KernelVersion string `json:"kernelVersion"`
	Arch          string `json:"arch"`
	Uptime        uint64 `json:"uptime"`   // s
	BootTime      uint64 `json:"bootTime"` // s since the epoch
	Procs         int    `json:"procs"`
}

// OS describes the host (uname, /proc/stat, /etc/os-release).
func OS() (OSInfo, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return OSInfo{}, err
	}
	out := OSInfo{OS: runtime.GOOS, Arch: unix.ByteSliceToString(u.Machine[:]), KernelVersion: unix.ByteSliceToString(u.Release[:])}
	out.Hostname, _ = os.Hostname()
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if st, err := fs.Stat(); err == nil {
			out.BootTime = st.BootTime
			out.Uptime = uint64(time.Now().Unix()) - st.BootTime
			out.Procs = int(st.ProcessesRunning)
		}
		if ps, err := fs.AllProcs(); err == nil {
			out.Procs = len(ps)
		}
	}
	if f, err := os.Open("/etc/os-release"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
				out.Platform = strings.Trim(v, `"`)
			}
		}
		f.Close()
	}
	return out, nil
}

// Port is a listening socket (info.port, as netstat -ln).
type Port struct {
	Network string `json:"network"` // tcp, tcp6, udp, udp6
	IP      string `json:"ip"`
	Port    uint64 `json:"port"`
	Inode   uint64 `json:"inode"`
}

// Ports lists listening TCP sockets and bound UDP sockets.
func Ports() ([]Port, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, err
	}
	out := []Port{}
	type lister func() (procfs.NetTCP, error)
	//lint:ignore SA1019 /proc/net/tcp* is the source the agent documents (and needs no netlink socket)
	tcp, tcp6 := fs.NetTCP, fs.NetTCP6
	for _, l := range []struct {
		net string
		f   lister
	}{{"tcp", tcp}, {"tcp6", tcp6}} {
		lines, err := l.f()
		if err != nil {
			continue
		}
		for _, s := range lines {
			if s.St == 0x0A { // LISTEN
				out = append(out, Port{Network: l.net, IP: s.LocalAddr.String(), Port: s.LocalPort, Inode: s.Inode})
			}
		}
	}
	for _, l := range []struct {
		net string
		f   func() (procfs.NetUDP, error)
	}{{"udp", fs.NetUDP}, {"udp6", fs.NetUDP6}} {
		lines, err := l.f()
		if err != nil {
			continue
		}
		for _, s := range lines {
			out = append(out, Port{Network: l.net, IP: s.LocalAddr.String(), Port: s.LocalPort, Inode: s.Inode})
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Port != out[b].Port {
			return out[a].Port < out[b].Port
		}
		return out[a].Network < out[b].Network
	})
	return out, nil
}

// BlockDevice is one block device (disk.list), shaped like lsblk -J.
type BlockDevice struct {
	Name        string        `json:"name"`
	Kname       string        `json:"kname"`
	MajMin      string        `json:"maj:min"`
	Size        uint64        `json:"size"` // bytes
	RO          bool          `json:"ro"`
	Rota        bool          `json:"rota"`
	Type        string        `json:"type"` // disk, part, loop
	Model       string        `json:"model,omitempty"`
	Serial      string        `json:"serial,omitempty"`
	Mountpoints []string      `json:"mountpoints"`
	Children    []BlockDevice `json:"children,omitempty"`
}

// BlockDevices lists /sys/block with their partitions and mount points.
func BlockDevices() (map[string][]BlockDevice, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	mounts := map[string][]string{}
	if ms, err := Mounts(); err == nil {
		for _, m := range ms {
			mounts[m.MajMin] = append(mounts[m.MajMin], m.Mountpoint)
		}
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	dev := func(dir, name, typ string) BlockDevice {
		sectors, _ := strconv.ParseUint(read(filepath.Join(dir, "size")), 10, 64)
		d := BlockDevice{Name: name, Kname: name, MajMin: read(filepath.Join(dir, "dev")), Size: sectors * 512,
			RO: read(filepath.Join(dir, "ro")) == "1", Type: typ, Mountpoints: []string{}}
		if ms := mounts[d.MajMin]; ms != nil {
			d.Mountpoints = ms
		}
		return d
	}
	out := []BlockDevice{}
	for _, e := range ents {
		dir := filepath.Join("/sys/block", e.Name())
		typ := "disk"
		if strings.HasPrefix(e.Name(), "loop") {
			typ = "loop"
		}
		d := dev(dir, e.Name(), typ)
		d.Rota = read(filepath.Join(dir, "queue/rotational")) == "1"
		d.Model = read(filepath.Join(dir, "device/model"))
		d.Serial = read(filepath.Join(dir, "device/serial"))
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if strings.HasPrefix(s.Name(), e.Name()) {
				if _, err := os.Stat(filepath.Join(dir, s.Name(), "partition")); err == nil {
					d.Children = append(d.Children, dev(filepath.Join(dir, s.Name()), s.Name(), "part"))
				}
			}
		}
		if typ == "loop" && d.Size == 0 {
			continue // unused loop devices
		}
		out = append(out, d)
	}
	return map[string][]BlockDevice{"blockdevices": out}, nil
}

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	MajMin     string `json:"maj:min"`
	Source     string `json:"source"`
	Mountpoint string `json:"mountpoint"`
	Fstype     string `json:"fstype"`
	Options    string `json:"options"`
}

// Mounts reads /proc/self/mountinfo.
func Mounts() ([]Mount, error) {
	ms, err := procfs.GetMounts()
	if err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	out := make([]Mount, 0, len(ms))
	for _, m := range ms {
		opts := make([]string, 0, len(m.Options))
		for k, v := range m.Options {
			if v != "" {
				k += "=" + v
			}
			opts = append(opts, k)
		}
		sort.Strings(opts)
		out = append(out, Mount{MajMin: m.MajorMinorVer, Source: m.Source, Mountpoint: m.MountPoint, Fstype: m.FSType, Options: strings.Join(opts, ",")})
	}
	return out, nil
}
