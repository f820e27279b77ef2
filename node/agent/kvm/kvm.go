// Package kvm binds the node's VM runtime (node/vm) to the agent: the
// kvm.* commands of 0-core, and the vdisk leases of the VMs' disks taken
// through the node's blockd (Disks).
//
// Commands (arguments are JSON objects; "name" names the VM):
//
//	kvm.create        vm.Spec (0-core's shape)            → vm.Info
//	                  (port forwards of a VM without a default nic go to
//	                  its first bridge nic with an ip: Forwarder)
//	kvm.list          {}                                   → [vm.Info]
//	kvm.get           {name}                               → vm.Spec
//	kvm.info          {name}                               → vm.Info
//	kvm.start         {name}                               → vm.Info (boot a stopped VM again)
//	kvm.shutdown      {name, timeout (s, default 60)}      → {killed}
//	kvm.destroy       {name}
//	kvm.pause/resume/reset/reboot {name}
//	kvm.attach_disk   {name, media: vm.Media}              → {id}
//	kvm.detach_disk   {name, disk: ID|URL} (or media.url)
//	kvm.limit_disk_io {name, disk: ID|URL, iotune}
//	kvm.console       {name, follow}                       → the serial log as output lines
//
// Errors: bad input (vm.ErrInvalid) answers ERROR with code 400; anything
// else (a missing VM, a refused lease, qemu failing) ERROR with code 500 and
// the runtime's message, which quotes qemu's.
package kvm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/vm"
)

// Disks is the node's blockd as the VMs' leases need it.
type Disks interface {
	// Hold opens vdisk name read-write on this node, which takes its lease
	// (refused with a message naming the holder if another node has it);
	// release gives it back. With alone, it is refused with an error
	// matching ErrAttachedHere if anything on this node has it open
	// read-write already (an NBD client, a VM, an operation), checked in
	// the same step as the open.
	Hold(ctx context.Context, name string, alone bool) (release func(), err error)
	// Exists returns an error saying so when there is no vdisk name.
	Exists(ctx context.Context, name string) error
}

// ErrAttachedHere is Disks.Hold's refusal of an alone hold.
var ErrAttachedHere = errors.New("vdisk attached read-write on this node")

// Leaser is the vm.DiskLeaser of a node: a disk served by the node's own
// blockd (a bare vdisk name, or nbd://LOCAL/NAME) is held open read-write
// by the leaser for as long as the VM has it, so the vdisk's lease is
// this node's from before qemu connects until after it let go. A vdisk
// open read-write here by anything else is refused, as is one attached on
// another node (by blockd). Disks of other NBD servers take no lease here.
type Leaser struct {
	disks Disks
	local string
	log   *slog.Logger

	mu   sync.Mutex
	held map[string]func() // vm + "\x00" + url → release
	by   map[string]string // vdisk → vm holding it
}

// NewLeaser returns a Leaser for the blockd whose NBD address is local
// (host:port, as vm.Config.LocalNBD).
func NewLeaser(d Disks, local string, log *slog.Logger) *Leaser {
	if log == nil {
		log = slogx.Discard
	}
	return &Leaser{disks: d, local: local, log: log, held: map[string]func(){}, by: map[string]string{}}
}

// vdisk returns the local vdisk a read-write disk URL names, or "" when
// the URL is not served by the local blockd read-write.
func (l *Leaser) vdisk(url string) string {
	export := url
	if strings.Contains(url, "://") {
		rest, ok := strings.CutPrefix(url, "nbd://")
		if !ok {
			return ""
		}
		host, exp, _ := strings.Cut(rest, "/")
		if !l.isLocal(host) {
			return ""
		}
		export = exp
	}
	if export == "" || strings.ContainsAny(export, ":@") { // NAME:ro, NAME@SNAP
		return ""
	}
	return export
}

func (l *Leaser) isLocal(hostport string) bool {
	if hostport == l.local {
		return true
	}
	h, p, err := net.SplitHostPort(hostport)
	lh, lp, lerr := net.SplitHostPort(l.local)
	if err != nil || lerr != nil || p != lp {
		return false
	}
	if ip := net.ParseIP(lh); ip != nil && ip.IsUnspecified() {
		ip2 := net.ParseIP(h)
		return h == "localhost" || ip2 != nil && ip2.IsLoopback()
	}
	return false
}

// Acquire implements vm.DiskLeaser.
func (l *Leaser) Acquire(ctx context.Context, vmName, url string) error {
	name := l.vdisk(url)
	if name == "" {
		return nil
	}
	if err := l.disks.Exists(ctx, name); err != nil {
		return err
	}
	l.mu.Lock()
	if other, ok := l.by[name]; ok && other != vmName {
		l.mu.Unlock()
		return fmt.Errorf("vdisk %s is attached read-write to vm %s on this node", name, other)
	}
	_, mine := l.held[vmName+"\x00"+url]
	l.mu.Unlock()
	if mine {
		return nil
	}
	return l.hold(ctx, vmName, url, name, true)
}

// hold takes the lease of vdisk name for vmName's disk url; alone refuses
// a vdisk open read-write here already (a new VM's), !alone shares it (an
// adopted VM's, whose qemu may have reconnected first).
func (l *Leaser) hold(ctx context.Context, vmName, url, name string, alone bool) error {
	rel, err := l.disks.Hold(ctx, name, alone)
	if errors.Is(err, ErrAttachedHere) {
		return fmt.Errorf("vdisk %s is attached read-write on this node by another client; detach it first (or attach it read-only as %s:ro)", name, name)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if other, ok := l.by[name]; ok && other != vmName {
		rel()
		return fmt.Errorf("vdisk %s is attached read-write to vm %s on this node", name, other)
	}
	if old := l.held[vmName+"\x00"+url]; old != nil {
		rel = old // a concurrent hold won; keep one
	}
	l.held[vmName+"\x00"+url], l.by[name] = rel, vmName
	return nil
}

// Release implements vm.DiskLeaser; releasing what is not held is a no-op.
func (l *Leaser) Release(_ context.Context, vmName, url string) error {
	k := vmName + "\x00" + url
	l.mu.Lock()
	rel := l.held[k]
	delete(l.held, k)
	if name := l.vdisk(url); name != "" && l.by[name] == vmName {
		delete(l.by, name)
	}
	l.mu.Unlock()
	if rel != nil {
		rel()
	}
	return nil
}

// Readopt takes the leases of the VMs a restarted vm.Manager adopted
// running: their qemu kept the disks, and this node keeps their leases.
func (l *Leaser) Readopt(ctx context.Context, m *vm.Manager) {
	infos, err := m.List(ctx)
	if err != nil {
		l.log.Warn("kvm: list vms for their leases", "err", err)
		return
	}
	for _, in := range infos {
		if in.State == vm.StateStopped {
			continue
		}
		for _, d := range in.Disks {
			if d.ReadOnly {
				continue
			}
			if name := l.vdisk(d.URL); name != "" {
				if err := l.hold(ctx, in.Name, d.URL, name, false); err != nil {
					l.log.Warn("kvm: lease of an adopted vm's disk", "vm", in.Name, "vdisk", name, "err", err)
				}
			}
		}
	}
}

// Close gives back every lease the Leaser holds (at agent stop: blockd
// closes after the agent; a VM's qemu that keeps running reconnects to
// the restarted node, which takes the lease again).
func (l *Leaser) Close() {
	l.mu.Lock()
	rels := make([]func(), 0, len(l.held))
	for _, r := range l.held {
		rels = append(rels, r)
	}
	l.held, l.by = map[string]func(){}, map[string]string{}
	l.mu.Unlock()
	for _, r := range rels {
		r()
	}
}

// NameArgs names a VM.
type NameArgs struct {
	Name string `json:"name"`
}

// ShutdownArgs are kvm.shutdown's.
type ShutdownArgs struct {
	Name string `json:"name"`
	// Timeout is how long the guest gets to power off before qemu is
	// killed, in seconds (default 60).
	Timeout int `json:"timeout,omitempty"`
}

// ShutdownResult is kvm.shutdown's answer.
type ShutdownResult struct {
	Killed bool `json:"killed"`
}

// DiskArgs are kvm.attach_disk's, kvm.detach_disk's and
// kvm.limit_disk_io's.
type DiskArgs struct {
	Name string `json:"name"`
	// Media is the disk to attach (kvm.attach_disk); for detach and limits
	// its url names the disk, as 0-core's did.
	Media *vm.Media `json:"media,omitempty"`
	// Disk names the disk by id (disk1) or URL (detach, limits).
	Disk   string     `json:"disk,omitempty"`
	IOTune *vm.IOTune `json:"iotune,omitempty"`
}

// AttachResult is kvm.attach_disk's answer.
type AttachResult struct {
	ID string `json:"id"`
}

// ConsoleArgs are kvm.console's.
type ConsoleArgs struct {
	Name   string `json:"name"`
	Follow bool   `json:"follow,omitempty"`
}

// Forwarder makes the port forwards of a VM whose way in is a bridge nic
// with the guest's ip (a VM with a "default" nic has qemu's own user-mode
// forwards instead): nftables DNAT, as containers' forwards.
type Forwarder interface {
	// Forward sends host TCP port → guest port (ports, as vm.Spec.Port)
	// to ip on bridge, for vm.
	Forward(ctx context.Context, vm, bridge string, ip net.IP, ports map[string]int) error
	// Unforward deletes vm's forwards (none: nil).
	Unforward(vm string) error
}

// forwardNIC returns the nic a Spec's port forwards go to through a
// Forwarder: none when it has a default nic (qemu forwards) or no ports.
func forwardNIC(s vm.Spec) *vm.NIC {
	if len(s.Port) == 0 {
		return nil
	}
	var first *vm.NIC
	for i, n := range s.NICs {
		if n.Type == "default" {
			return nil
		}
		if first == nil && n.Type == "bridge" && n.IP != "" {
			first = &s.NICs[i]
		}
	}
	return first
}

// Register adds the kvm.* commands for m's VMs to a; fw (nil: none) makes
// the port forwards of bridge nics.
func Register(a *agent.Manager, m *vm.Manager, fw Forwarder) {
	named := func(f func(ctx context.Context, name string) (any, error)) agent.Handler {
		return func(ctx context.Context, j *agent.Job) (any, error) {
			var n NameArgs
			if err := j.Decode(&n); err != nil {
				return nil, err
			}
			if n.Name == "" {
				return nil, agent.Argf("name is required")
			}
			return wrap(f(ctx, n.Name))
		}
	}
	a.Register("kvm.create", func(ctx context.Context, j *agent.Job) (any, error) {
		raw := j.Cmd.Arguments
		if len(raw) == 0 {
			raw = json.RawMessage("{}")
		}
		s, err := vm.DecodeSpec(raw)
		if err != nil {
			return nil, agent.Argf("%v", err)
		}
		nic := forwardNIC(s)
		if nic != nil && fw == nil {
			return nil, fmt.Errorf("vm %s: port forwards to a bridge nic are not available on this node", s.Name)
		}
		in, err := m.Create(ctx, s)
		if err != nil || nic == nil {
			return wrap(in, err)
		}
		br := nic.ID
		for _, n := range in.NICs {
			if n.Type == "bridge" && n.IP == nic.IP {
				br = n.Bridge
				break
			}
		}
		if err := fw.Forward(ctx, s.Name, br, net.ParseIP(nic.IP), s.Port); err != nil {
			fw.Unforward(s.Name)
			m.Destroy(context.Background(), s.Name)
			return nil, fmt.Errorf("vm %s: port forwards: %w", s.Name, err)
		}
		return in, nil
	})
	a.Register("kvm.list", func(ctx context.Context, j *agent.Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		l, err := m.List(ctx)
		if l == nil {
			l = []vm.Info{}
		}
		return wrap(l, err)
	})
	a.Register("kvm.get", named(func(ctx context.Context, n string) (any, error) { return m.Get(n) }))
	a.Register("kvm.info", named(func(ctx context.Context, n string) (any, error) { return m.Info(ctx, n) }))
	a.Register("kvm.start", named(func(ctx context.Context, n string) (any, error) {
		if err := m.Start(ctx, n); err != nil {
			return nil, err
		}
		return m.Info(ctx, n)
	}))
	a.Register("kvm.destroy", named(func(ctx context.Context, n string) (any, error) {
		if err := m.Destroy(ctx, n); err != nil {
			return nil, err
		}
		if fw != nil {
			if err := fw.Unforward(n); err != nil {
				return nil, fmt.Errorf("vm %s destroyed, but its port forwards remain: %w", n, err)
			}
		}
		return nil, nil
	}))
	a.Register("kvm.pause", named(func(ctx context.Context, n string) (any, error) { return nil, m.Pause(ctx, n) }))
	a.Register("kvm.resume", named(func(ctx context.Context, n string) (any, error) { return nil, m.Resume(ctx, n) }))
	a.Register("kvm.reset", named(func(ctx context.Context, n string) (any, error) { return nil, m.Reset(ctx, n) }))
	a.Register("kvm.reboot", named(func(ctx context.Context, n string) (any, error) { return nil, m.Reboot(ctx, n) }))
	a.Register("kvm.shutdown", func(ctx context.Context, j *agent.Job) (any, error) {
		var s ShutdownArgs
		if err := j.Decode(&s); err != nil {
			return nil, err
		}
		if s.Timeout < 0 {
			return nil, agent.Argf("timeout %d: want seconds >= 0", s.Timeout)
		}
		d := 60 * time.Second
		if s.Timeout > 0 {
			d = time.Duration(s.Timeout) * time.Second
		}
		killed, err := m.Shutdown(ctx, s.Name, d)
		return wrap(ShutdownResult{Killed: killed}, err)
	})
	a.Register("kvm.attach_disk", func(ctx context.Context, j *agent.Job) (any, error) {
		var d DiskArgs
		if err := j.Decode(&d); err != nil {
			return nil, err
		}
		if d.Media == nil {
			return nil, agent.Argf("media is required")
		}
		id, err := m.AttachDisk(ctx, d.Name, *d.Media)
		return wrap(AttachResult{ID: id}, err)
	})
	a.Register("kvm.detach_disk", func(ctx context.Context, j *agent.Job) (any, error) {
		d, err := diskArgs(j)
		if err != nil {
			return nil, err
		}
		return wrap[any](nil, m.DetachDisk(ctx, d.Name, d.Disk))
	})
	a.Register("kvm.limit_disk_io", func(ctx context.Context, j *agent.Job) (any, error) {
		d, err := diskArgs(j)
		if err != nil {
			return nil, err
		}
		var t vm.IOTune
		if d.IOTune != nil {
			t = *d.IOTune
		} else if d.Media != nil && d.Media.IOTune != nil {
			t = *d.Media.IOTune
		}
		return wrap[any](nil, m.LimitDiskIO(ctx, d.Name, d.Disk, t))
	})
	a.Register("kvm.console", func(ctx context.Context, j *agent.Job) (any, error) {
		var c ConsoleArgs
		if err := j.Decode(&c); err != nil {
			return nil, err
		}
		r, err := m.Console(c.Name, c.Follow)
		if err != nil {
			return wrap[any](nil, err)
		}
		defer r.Close()
		go func() { <-ctx.Done(); r.Close() }()
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				j.Emit(agent.LevelStdout, strings.TrimRight(line, "\r\n"))
			}
			if err != nil {
				// EOF, the job cancelled, or the console closed with the VM.
				return nil, nil
			}
		}
	})
}

func diskArgs(j *agent.Job) (DiskArgs, error) {
	var d DiskArgs
	if err := j.Decode(&d); err != nil {
		return d, err
	}
	if d.Disk == "" && d.Media != nil {
		d.Disk = d.Media.URL
	}
	if d.Disk == "" {
		return d, agent.Argf("disk (an id such as disk1, or its url) is required")
	}
	return d, nil
}

// wrap maps the runtime's errors onto the agent's codes.
func wrap[T any](v T, err error) (any, error) {
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, vm.ErrInvalid):
		return nil, agent.Argf("%v", err)
	}
	return nil, err
}
