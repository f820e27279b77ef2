package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/agent/kvm"
	"github.com/zosproject/zos/node/container/network"
	"github.com/zosproject/zos/node/vm"
	"github.com/zosproject/zos/raft/fsm"
)

// vmBridgeCIDR is the address zos0 gets when a VM's bridge nic makes it
// (the containers' default, so both share one bridge).
const vmBridgeCIDR = "172.18.0.1/16"

// startVMs opens the node's VM runtime (DIR/vms, adopting the VMs a
// previous run left running) and registers kvm.*. Without qemu the node
// runs without VMs. The VMs keep running when the node stops.
func (n *Node) startVMs(m *agent.Manager, brs *bridge.Bridges) {
	local := n.cfg.hostPort(n.cfg.NBDPort)
	leaser := kvm.NewLeaser(blockdDisks{n.blockd}, local, n.cfg.Logger)
	vms, err := vm.Open(vm.Config{Dir: filepath.Join(n.cfg.Dir, "vms"), QEMU: n.cfg.QEMU, LocalNBD: local,
		Leaser: leaser, Bridges: vmBridges{brs}, Logger: n.cfg.Logger, Registerer: n.reg})
	if err != nil {
		n.log.Warn("vms (kvm.*) unavailable", "err", err)
		return
	}
	leaser.Readopt(n.ctx, vms)
	n.reapQemu(filepath.Join(n.cfg.Dir, "vms"))
	kvm.Register(m, vms, &vmForwards{})
	// Closed after the agent (closers run in reverse): Close, not Destroy,
	// so qemu keeps running; the leases go back with blockd's close.
	n.closers = append(n.closers, func() error { err := vms.Close(); leaser.Close(); return err })
}

// blockdDisks is kvm.Disks over the node's blockd.
type blockdDisks struct{ s *blockd.Service }

func (d blockdDisks) Hold(ctx context.Context, name string, alone bool) (func(), error) {
	if !alone {
		_, rel, err := d.s.Open(ctx, name)
		return rel, err
	}
	_, rel, err := d.s.OpenAlone(ctx, name)
	if errors.Is(err, blockd.ErrAttachedHere) {
		err = kvm.ErrAttachedHere
	}
	return rel, err
}

func (d blockdDisks) Exists(ctx context.Context, name string) error {
	if _, err := d.s.Get(ctx, name, false); err != nil {
		if errors.Is(err, fsm.ErrNotFound) {
			return fmt.Errorf("vdisk %s does not exist (zos vdisk list shows the vdisks)", name)
		}
		return fmt.Errorf("vdisk %s: %w", name, err)
	}
	return nil
}

// vmBridges makes a missing zos0 the way bridge.create does (static
// address, NAT); other bridges must exist (bridge.create them).
type vmBridges struct{ b *bridge.Bridges }

func (v vmBridges) EnsureBridge(_ context.Context, name string) error {
	var nf netlink.LinkNotFoundError
	if _, err := netlink.LinkByName(name); !errors.As(err, &nf) {
		return err
	}
	if name != "zos0" {
		return fmt.Errorf("bridge %s does not exist (bridge.create it first)", name)
	}
	return v.b.Create(bridge.Args{Name: name, Network: bridge.Network{Mode: "static", NAT: true,
		Settings: bridge.Settings{CIDR: vmBridgeCIDR}}})
}

// reapQemu: qemu daemonizes, so its processes are orphans reparented to
// init. When the node is init (PID 1, zos as a host's first process),
// nobody else would reap them: every SIGCHLD (and every 5 s) the node
// notes the pids of the qemu daemons (their pid files under vmsDir) and
// waits for those that exited, and for qemu zombies nobody waited for
// within zombieGrace (the middle process of qemu's double fork). Other
// children — the `qemu -daemonize` launchers the runtime waits for itself,
// the agent's jobs — are left to whoever waits for them.
func (n *Node) reapQemu(vmsDir string) {
	if os.Getpid() != 1 {
		return
	}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer signal.Stop(ch)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		known := map[int]bool{}
		seen := map[int]time.Time{}
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-ch:
			case <-t.C:
			}
			reapQemuDaemons(vmsDir, os.Getpid(), known, seen)
		}
	}()
}

// zombieGrace: an exited qemu child not in a pid file is reaped once it
// has been a zombie this long. The `qemu -daemonize` launchers the
// runtime started are waited for at once by their exec.Cmd; the
// intermediate process of qemu's double fork is nobody's.
const zombieGrace = 5 * time.Second

// reapQemuDaemons adds the pids of vmsDir/*/qemu.pid to known, then reaps
// every exited child of ppid that is a known qemu daemon, or a qemu that
// has been a zombie for zombieGrace (seen: since when), and forgets the
// gone.
func reapQemuDaemons(vmsDir string, ppid int, known map[int]bool, seen map[int]time.Time) {
	files, _ := filepath.Glob(filepath.Join(vmsDir, "*", "qemu.pid"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				known[pid] = true
			}
		}
	}
	reap := func(pid int) {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
	for pid := range known {
		_, state, parent, ok := procStat(pid)
		switch {
		case !ok:
			delete(known, pid)
		case state == 'Z' && parent == ppid:
			reap(pid)
			delete(known, pid)
		}
	}
	now := time.Now()
	ents, _ := os.ReadDir("/proc")
	live := map[int]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, state, parent, ok := procStat(pid)
		if !ok || state != 'Z' || parent != ppid || !strings.HasPrefix(comm, "qemu") {
			continue
		}
		live[pid] = true
		if first, ok := seen[pid]; !ok {
			seen[pid] = now
		} else if now.Sub(first) >= zombieGrace {
			reap(pid)
			delete(seen, pid)
		}
	}
	for pid := range seen {
		if !live[pid] {
			delete(seen, pid)
		}
	}
}

// procStat reads the command name, state and parent of pid.
func procStat(pid int) (comm string, state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, 0, false
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i || j+2 >= len(s) {
		return "", 0, 0, false
	}
	f := strings.Fields(s[j+2:])
	if len(f) < 2 {
		return "", 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return s[i+1 : j], f[0][0], ppid, err == nil
}

// vmForwards is kvm.Forwarder over the nftables table containers use
// ("zos"), each rule tagged vm:NAME/PORT.
type vmForwards struct {
	mu  sync.Mutex
	nat *network.NAT
}

func (f *vmForwards) table() (*network.NAT, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nat == nil {
		nat, err := network.NewNAT("zos")
		if err != nil {
			return nil, err
		}
		f.nat = nat
	}
	return f.nat, nil
}

func (f *vmForwards) Forward(ctx context.Context, vm, bridge string, ip net.IP, ports map[string]int) error {
	nat, err := f.table()
	if err != nil {
		return err
	}
	b, err := (&network.Netlink{}).Bridge(ctx, bridge)
	if err != nil {
		return err
	}
	if b.Net != nil {
		// Forwards work from the host itself (127.0.0.1) too, as containers'.
		if err := nat.Loopback(bridge, b.Net); err != nil {
			return err
		}
		if err := network.SetRouteLocalnet(bridge); err != nil {
			return err
		}
	}
	for h, g := range ports {
		hp, err := strconv.Atoi(h)
		if err != nil {
			return fmt.Errorf("port %q: %w", h, err)
		}
		if err := nat.AddForward("vm:"+vm+"/"+h, network.Forward{HostPort: uint16(hp), Proto: network.TCP, To: ip, ToPort: uint16(g)}); err != nil {
			return err
		}
	}
	return nil
}

func (f *vmForwards) Unforward(vm string) error {
	nat, err := f.table()
	if err != nil {
		return err
	}
	return nat.DeleteTagged("vm:" + vm)
}
