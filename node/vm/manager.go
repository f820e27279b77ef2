package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/zosproject/zos/node/vm/console"
	"github.com/zosproject/zos/node/vm/tap"
)

// Config configures a Manager. Zero values take the defaults.
type Config struct {
	// Dir holds one directory per VM (state, QMP and console sockets, pid
	// file, console log); e.g. <node data dir>/vms. Required.
	Dir string
	// QEMU is the qemu-system-x86_64 binary (found on PATH by default).
	QEMU string
	// Accel is "kvm", "tcg" or "" to probe /dev/kvm (see probeKVM).
	Accel string
	// LocalNBD is host:port of the node's blockd, for media given as a bare
	// vdisk name (default 127.0.0.1:10809).
	LocalNBD string
	// Bridge is the bridge of "bridge" NICs without an id (default zos0).
	Bridge string
	// ConsoleBytes caps each VM's console log on disk (default 1 MiB).
	ConsoleBytes int64
	// StartTimeout bounds qemu's start up to a connected QMP (default 2 min).
	StartTimeout time.Duration
	// Leaser takes vdisk leases (none by default).
	Leaser DiskLeaser
	// Bridges provides the bridges of "bridge" NICs (bare netlink bridges
	// created on demand by default).
	Bridges Bridges
	// Logger (slog.Default by default) and Registerer (none by default).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Validate reports a Config that cannot work.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("vm: Config.Dir is required")
	}
	if strings.ContainsAny(c.Dir, ",\x00") {
		return fmt.Errorf("vm: Config.Dir %q: commas are not allowed (qemu option syntax)", c.Dir)
	}
	switch c.Accel {
	case "", "kvm", "tcg":
	default:
		return fmt.Errorf("vm: Config.Accel %q: want kvm, tcg or empty", c.Accel)
	}
	if c.LocalNBD != "" {
		if _, _, err := net.SplitHostPort(c.LocalNBD); err != nil {
			return fmt.Errorf("vm: Config.LocalNBD %q: %v", c.LocalNBD, err)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.LocalNBD == "" {
		c.LocalNBD = "127.0.0.1:10809"
	}
	if c.Bridge == "" {
		c.Bridge = "zos0"
	}
	if c.ConsoleBytes == 0 {
		c.ConsoleBytes = 1 << 20
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 2 * time.Minute
	}
	if c.Leaser == nil {
		c.Leaser = noLeases{}
	}
	if c.Bridges == nil {
		c.Bridges = netlinkBridges{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// State is a VM's lifecycle state.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped" // qemu has exited; the VM stays listed until Destroy
)

// persisted is vm.json: what a restarted Manager needs to adopt the VM.
type persisted struct {
	Spec     Spec      `json:"spec"`
	Accel    string    `json:"accel"`
	Disks    []disk    `json:"disks"`
	NICs     []nic     `json:"nics"`
	NextDisk int       `json:"next_disk"`
	Created  time.Time `json:"created"`
	Stopped  bool      `json:"stopped,omitempty"`
	Exit     string    `json:"exit,omitempty"` // why it stopped
}

// machine is one VM. mu serialises operations on it; the fields below mu
// change only under it.
type machine struct {
	name string
	f    files

	mu      sync.Mutex
	st      persisted
	proc    *process // nil once stopped
	mon     *monitor
	log     *console.Log
	serial  net.Conn // the console socket the pump reads
	stopped bool
	cleaned bool // cleanupLocked ran in this process
	pumpWG  sync.WaitGroup
	watchWG sync.WaitGroup
	quit    chan struct{} // closed by Manager.Close: stop watching, leave qemu alone
}

// Manager runs the VMs of one node. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	accel string

	lock *os.File // flock on Dir/.lock, held until Close

	mu     sync.Mutex
	vms    map[string]*machine
	rw     map[string]string // read-write disk URL -> VM holding it
	closed bool

	created, failed prometheus.Counter
}

// Open returns a Manager over cfg.Dir, adopting the VMs found there: a VM
// whose qemu still runs (pid file + QMP socket) is reconnected and keeps
// running; one whose qemu is gone is marked stopped and its leases and taps
// are released.
func Open(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("vm: %s is in use by another Manager (another agent?): %w", cfg.Dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "vm"), vms: map[string]*machine{}, rw: map[string]string{}, lock: lock}
	m.accel = cfg.Accel
	if m.accel == "" {
		if err := probeKVM(3 * time.Second); err != nil {
			m.accel = "tcg"
			m.log.Info("kvm unusable, using tcg", "reason", err)
		} else {
			m.accel = "kvm"
		}
	}
	m.created = prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_vm_created_total", Help: "VMs started by Create."})
	m.failed = prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_vm_create_failures_total", Help: "Create calls that failed and were rolled back."})
	if r := cfg.Registerer; r != nil {
		running := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zos_vm_running", Help: "VMs whose qemu runs (running or paused)."},
			func() float64 { return float64(m.countRunning()) })
		for _, c := range []prometheus.Collector{running, m.created, m.failed} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("vm: register metrics: %w", err)
			}
		}
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !ValidName(e.Name()) {
			continue
		}
		if err := m.adopt(e.Name()); err != nil {
			m.log.Warn("cannot adopt vm; leaving its directory alone", "vm", e.Name(), "err", err)
		}
	}
	ok = true
	return m, nil
}

// Accel is the accelerator new VMs get ("kvm" or "tcg").
func (m *Manager) Accel() string { return m.accel }

func (m *Manager) countRunning() int {
	m.mu.Lock()
	vms := make([]*machine, 0, len(m.vms))
	for _, v := range m.vms {
		vms = append(vms, v)
	}
	m.mu.Unlock()
	n := 0
	for _, v := range vms {
		v.mu.Lock()
		if !v.stopped && v.proc != nil {
			n++
		}
		v.mu.Unlock()
	}
	return n
}

func (m *Manager) adopt(name string) error {
	v := &machine{name: name, f: files{filepath.Join(m.cfg.Dir, name)}, quit: make(chan struct{})}
	b, err := os.ReadFile(v.f.state())
	if errors.Is(err, os.ErrNotExist) {
		// Create made the directory and stopped before its first save:
		// nothing was acquired or started yet.
		m.log.Info("removing the directory of a vm whose create never got far", "vm", name)
		return os.RemoveAll(v.f.dir)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &v.st); err != nil {
		return fmt.Errorf("%s: %w", v.f.state(), err)
	}
	for i := range v.st.Disks {
		t, err := parseNBD(v.st.Disks[i].URL, m.cfg.LocalNBD)
		if err != nil {
			return fmt.Errorf("disk %s: %w", v.st.Disks[i].ID, err)
		}
		v.st.Disks[i].target = t
	}
	log := m.log.With("vm", name)
	if !v.st.Stopped {
		p, err := findProcess(v.f.pid(), v.f.qmp())
		if err == nil {
			mon, err := dialMonitor(v.f.qmp(), 30*time.Second)
			if err == nil {
				v.proc, v.mon = p, mon
				if err := v.openConsole(m.cfg.ConsoleBytes); err != nil {
					log.Warn("console", "err", err)
				}
				m.mu.Lock()
				m.vms[name] = v
				for _, d := range v.st.Disks {
					if !d.ReadOnly {
						m.rw[d.URL] = name // the lease is still held: qemu never let go of it
					}
				}
				m.mu.Unlock()
				v.watch(m)
				log.Info("adopted running vm", "pid", p.pid)
				return nil
			}
			log.Warn("qemu runs but its QMP socket does not answer; killing it", "pid", p.pid, "err", err)
			p.kill()
			p.close()
		}
		v.st.Exit = "qemu was gone when the agent started"
	}
	v.stopped = true
	m.mu.Lock()
	m.vms[name] = v
	m.mu.Unlock()
	m.cleanup(context.Background(), v, v.st.Exit)
	return nil
}

// Create starts a VM from s (defaults filled in, validated). On any error
// nothing is left behind: leases released, taps deleted, qemu killed, the
// VM's directory removed.
func (m *Manager) Create(ctx context.Context, s Spec) (Info, error) {
	if s.CPU == 0 {
		s.CPU = 1
	}
	if err := s.Validate(); err != nil {
		return Info{}, err
	}
	dir := filepath.Join(m.cfg.Dir, s.Name)
	v := &machine{name: s.Name, f: files{dir}, quit: make(chan struct{})}
	if n := len(v.f.serial()); n > 107 {
		return Info{}, fmt.Errorf("%w: socket path %s is %d bytes, the limit is 107: use a shorter Config.Dir or name", ErrInvalid, v.f.serial(), n)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Info{}, errors.New("vm: manager closed")
	}
	if _, ok := m.vms[s.Name]; ok {
		m.mu.Unlock()
		return Info{}, fmt.Errorf("%w: %s", ErrExists, s.Name)
	}
	v.mu.Lock() // held until started: other calls on the name wait
	m.vms[s.Name] = v
	m.mu.Unlock()
	err := m.start(ctx, v, s)
	if err != nil {
		m.failed.Inc()
		close(v.quit)
		m.mu.Lock()
		delete(m.vms, s.Name)
		m.mu.Unlock()
		v.mu.Unlock()
		return Info{}, fmt.Errorf("vm %s: %w", s.Name, err)
	}
	m.created.Inc()
	v.mu.Unlock()
	v.watch(m)
	return m.Info(ctx, s.Name)
}

// start does Create's work with v.mu held: it makes the VM's directory and
// state, then launches it; on error the directory is removed again.
func (m *Manager) start(ctx context.Context, v *machine, s Spec) error {
	if err := os.Mkdir(v.f.dir, 0o750); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: directory %s is left from an earlier vm (destroy it)", ErrExists, v.f.dir)
		}
		return err
	}
	v.st = persisted{Spec: s, Created: time.Now().UTC()}
	for i, md := range s.Media {
		t, err := parseNBD(md.URL, m.cfg.LocalNBD)
		if err != nil {
			os.RemoveAll(v.f.dir)
			return fmt.Errorf("%w: media %d: %v", ErrInvalid, i, err)
		}
		d := disk{ID: "disk" + strconv.Itoa(i), Node: "nbd" + strconv.Itoa(i), URL: t.URL(), Type: md.Type, Bus: md.Bus,
			ReadOnly: md.ReadOnly || md.Type == "cdrom", IOTune: md.IOTune, target: t}
		if d.Type == "" {
			d.Type = "disk"
		}
		if d.Bus == "" {
			d.Bus = "virtio"
			if d.Type == "cdrom" {
				d.Bus = "ide"
			}
		}
		v.st.Disks = append(v.st.Disks, d)
	}
	v.st.NextDisk = len(v.st.Disks)
	for i, n := range s.NICs {
		x := nic{Type: n.Type, HWAddr: n.HWAddr, IP: n.IP}
		if x.HWAddr == "" {
			x.HWAddr = macFor(s.Name, i)
		}
		if n.Type == "bridge" {
			x.Bridge = n.ID
			if x.Bridge == "" {
				x.Bridge = m.cfg.Bridge
			}
			x.Tap = tap.Name(s.Name, i)
		}
		v.st.NICs = append(v.st.NICs, x)
	}
	// Recorded before anything is acquired: if this process dies during the
	// create, the next Open finds the VM stopped and releases what it took.
	v.st.Stopped, v.st.Exit = true, "the agent stopped during create"
	if err := v.save(); err != nil {
		os.RemoveAll(v.f.dir)
		return err
	}
	if err := m.launch(ctx, v); err != nil {
		os.RemoveAll(v.f.dir)
		return err
	}
	return nil
}

// Start boots a stopped VM again with the disks and NICs it had (disks
// hot-plugged before it stopped included), taking the leases and taps
// again. On error the VM stays stopped and nothing is held.
func (m *Manager) Start(ctx context.Context, name string) error {
	v, err := m.get(name)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if !v.stopped {
		return fmt.Errorf("vm %s: %w: it is running", name, ErrExists)
	}
	v.cleaned = false
	if err := m.launch(ctx, v); err != nil {
		v.cleaned = true
		v.st.Stopped, v.st.Exit = true, "start failed: "+err.Error()
		v.save()
		return fmt.Errorf("vm %s: %w", name, err)
	}
	v.stopped = false
	v.mu.Unlock()
	v.watch(m)
	v.mu.Lock()
	return nil
}

// launch runs the pre-start steps (leases, taps), starts qemu paused,
// connects QMP and the console, applies limits and lets the guest run. On
// error every step is undone in reverse order.
func (m *Manager) launch(ctx context.Context, v *machine) (err error) {
	s := v.st.Spec
	log := m.log.With("vm", s.Name)
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			log.Warn("start failed; rolled back", "err", err)
		}
	}()
	for _, d := range v.st.Disks {
		if d.ReadOnly {
			continue
		}
		if err := m.acquire(ctx, s.Name, d.URL); err != nil {
			return err
		}
		undo = append(undo, func() { m.release(s.Name, d.URL) })
	}
	for _, x := range v.st.NICs {
		if x.Tap == "" {
			continue
		}
		if err := m.cfg.Bridges.EnsureBridge(ctx, x.Bridge); err != nil {
			return fmt.Errorf("bridge %s: %w", x.Bridge, err)
		}
		if err := tap.Create(x.Tap, x.Bridge); err != nil {
			return err
		}
		undo = append(undo, func() { tap.Delete(x.Tap) })
	}
	v.st.Accel, v.st.Stopped, v.st.Exit = m.accel, false, ""
	if err := v.save(); err != nil {
		return err
	}
	args := qemuArgs(&s, m.accel, v.f, v.st.Disks, v.st.NICs)
	log.Info("starting qemu", "accel", m.accel, "cmd", m.cfg.QEMU+" "+shellQuote(args))
	errf, err := os.Create(v.f.stderr())
	if err != nil {
		return err
	}
	defer errf.Close()
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer cancel()
	cmd := exec.CommandContext(sctx, m.cfg.QEMU, args...)
	cmd.Stdout, cmd.Stderr = errf, errf
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	// With -daemonize the command returns once qemu's devices are set up
	// (NBD connected): a bad disk fails here with qemu's message.
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(v.f.stderr())
		// The daemon may have been forked before the failure: kill it.
		if p, perr := findProcess(v.f.pid(), v.f.qmp()); perr == nil {
			p.kill()
			p.close()
		}
		if m := strings.TrimSpace(string(msg)); m != "" {
			return fmt.Errorf("%w: %v: %s", ErrStart, err, m)
		}
		return fmt.Errorf("%w: %v", ErrStart, err)
	}
	p, err := findProcess(v.f.pid(), v.f.qmp())
	if err != nil {
		msg, _ := os.ReadFile(v.f.stderr())
		return fmt.Errorf("%w: qemu daemonized but %v %s", ErrStart, err, strings.TrimSpace(string(msg)))
	}
	v.proc = p
	undo = append(undo, func() { p.kill(); p.close(); v.proc = nil })
	mon, err := dialMonitor(v.f.qmp(), m.cfg.StartTimeout)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStart, err)
	}
	v.mon = mon
	undo = append(undo, func() { mon.close(); v.mon = nil })
	if err := v.openConsole(m.cfg.ConsoleBytes); err != nil {
		return err
	}
	undo = append(undo, func() { v.closeConsole() })
	for _, d := range v.st.Disks {
		if d.IOTune != nil {
			if err := mon.run(ctx, "block_set_io_throttle", throttleArgs(d.blockQDev(), *d.IOTune), nil); err != nil {
				return fmt.Errorf("disk %s: %w", d.ID, err)
			}
		}
	}
	if err := mon.run(ctx, "cont", nil, nil); err != nil {
		return err
	}
	log.Info("vm started", "pid", p.pid)
	return nil
}

func throttleArgs(id string, t IOTune) map[string]any {
	t = t.effective()
	return map[string]any{"id": id,
		"bps": t.TotalBytesSec, "bps_rd": t.ReadBytesSec, "bps_wr": t.WriteBytesSec,
		"iops": t.TotalIOPSSec, "iops_rd": t.ReadIOPSSec, "iops_wr": t.WriteIOPSSec}
}

// acquire claims url read-write for vm: refused if another VM of this
// Manager has it read-write, else the Leaser's lease is taken.
func (m *Manager) acquire(ctx context.Context, vm, url string) error {
	m.mu.Lock()
	if other, ok := m.rw[url]; ok && other != vm {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s is attached read-write to vm %s on this node", ErrLease, url, other)
	}
	m.rw[url] = vm
	m.mu.Unlock()
	if err := m.cfg.Leaser.Acquire(ctx, vm, url); err != nil {
		m.unclaim(vm, url)
		return fmt.Errorf("%w: %s: %v", ErrLease, url, err)
	}
	return nil
}

func (m *Manager) unclaim(vm, url string) {
	m.mu.Lock()
	if m.rw[url] == vm {
		delete(m.rw, url)
	}
	m.mu.Unlock()
}

// release gives back what acquire took (the Leaser's errors are logged).
func (m *Manager) release(vm, url string) {
	m.unclaim(vm, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.cfg.Leaser.Release(ctx, vm, url); err != nil {
		m.log.Warn("release lease", "vm", vm, "url", url, "err", err)
	}
}

// save writes vm.json crash-safely (temp, fsync, rename, fsync dir).
func (v *machine) save() error {
	b, err := json.MarshalIndent(v.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := v.f.state() + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, v.f.state()); err != nil {
		return err
	}
	d, err := os.Open(v.f.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openConsole opens the log and starts copying the serial socket into it.
func (v *machine) openConsole(capBytes int64) error {
	l, err := console.Open(v.f.console(), capBytes)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("unix", v.f.serial(), 10*time.Second)
	if err != nil {
		l.Close()
		return fmt.Errorf("connect serial console: %w", err)
	}
	v.log, v.serial = l, conn
	v.pumpWG.Add(1)
	go func() {
		defer v.pumpWG.Done()
		copied := make(chan struct{})
		defer close(copied)
		go func() {
			select {
			case <-v.quit:
				conn.Close()
			case <-copied:
			}
		}()
		io.Copy(l, conn) // ends when qemu exits or the manager closes
		conn.Close()
	}()
	return nil
}

func (v *machine) closeConsole() {
	if v.log != nil {
		v.log.Close()
	}
}

// watch notices qemu exiting on its own (guest poweroff, crash) and cleans up.
func (v *machine) watch(m *Manager) {
	v.mu.Lock()
	p := v.proc
	v.mu.Unlock()
	if p == nil {
		return
	}
	v.watchWG.Add(1)
	go func() {
		defer v.watchWG.Done()
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-v.quit; cancel() }()
		if p.wait(ctx) != nil {
			return // manager closed
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.stopped || v.proc != p {
			return
		}
		m.cleanupLocked(context.Background(), v, v.exitReason())
	}()
}

// exitReason is why qemu exited on its own, with qemu's SHUTDOWN reason.
func (v *machine) exitReason() string {
	why := "qemu exited"
	if v.mon != nil && v.mon.shutdownReason() != "" {
		why += " (" + v.mon.shutdownReason() + ")"
	}
	return why
}

func (m *Manager) cleanup(ctx context.Context, v *machine, why string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m.cleanupLocked(ctx, v, why)
}

// cleanupLocked is the post-stop hook: after qemu is gone, close the
// monitor and console, delete taps, release leases, remove sockets, and
// record the VM as stopped. Idempotent.
func (m *Manager) cleanupLocked(_ context.Context, v *machine, why string) {
	if v.cleaned {
		return
	}
	if v.mon != nil {
		v.mon.close()
		v.mon = nil
	}
	if v.proc != nil {
		v.proc.close()
		v.proc = nil
	}
	// The console pump ends at the socket's EOF (qemu is gone); wait so the
	// log is complete, but not forever.
	v.cleaned = true
	pumped := make(chan struct{})
	go func() { v.pumpWG.Wait(); close(pumped) }()
	select {
	case <-pumped:
	case <-time.After(5 * time.Second):
		if v.serial != nil {
			v.serial.Close()
		}
		<-pumped
	}
	v.closeConsole()
	for _, n := range v.st.NICs {
		if n.Tap != "" {
			if err := tap.Delete(n.Tap); err != nil {
				m.log.Warn("delete tap", "vm", v.name, "tap", n.Tap, "err", err)
			}
		}
	}
	for _, d := range v.st.Disks {
		if !d.ReadOnly {
			m.release(v.name, d.URL)
		}
	}
	for _, p := range []string{v.f.qmp(), v.f.serial(), v.f.pid()} {
		os.Remove(p)
	}
	v.stopped, v.cleaned = true, true
	if !v.st.Stopped {
		v.st.Stopped, v.st.Exit = true, why
		if err := v.save(); err != nil {
			m.log.Warn("save state", "vm", v.name, "err", err)
		}
		m.log.Info("vm stopped", "vm", v.name, "why", why)
	}
}

// get returns the VM called name, locked.
func (m *Manager) get(name string) (*machine, error) {
	m.mu.Lock()
	v, ok := m.vms[name]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	v.mu.Lock()
	m.mu.Lock()
	still := m.vms[name] == v
	m.mu.Unlock()
	if !still {
		v.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return v, nil
}

// running returns the VM locked, or ErrNotRunning.
func (m *Manager) running(name string) (*machine, error) {
	v, err := m.get(name)
	if err != nil {
		return nil, err
	}
	if v.stopped || v.mon == nil {
		v.mu.Unlock()
		return nil, fmt.Errorf("%w: %s (%s)", ErrNotRunning, name, v.st.Exit)
	}
	return v, nil
}

// Get returns the Spec the VM was created with.
func (m *Manager) Get(name string) (Spec, error) {
	v, err := m.get(name)
	if err != nil {
		return Spec{}, err
	}
	defer v.mu.Unlock()
	return v.st.Spec, nil
}

// Pause stops the guest's vCPUs (QMP stop).
func (m *Manager) Pause(ctx context.Context, name string) error {
	return m.simple(ctx, name, "stop", nil)
}

// Resume continues a paused guest (QMP cont).
func (m *Manager) Resume(ctx context.Context, name string) error {
	return m.simple(ctx, name, "cont", nil)
}

// Reset is a hard reset of the guest (QMP system_reset).
func (m *Manager) Reset(ctx context.Context, name string) error {
	return m.simple(ctx, name, "system_reset", nil)
}

// Reboot asks the guest to reboot by pressing Ctrl-Alt-Delete (a guest
// that ignores it keeps running; Reset is the hard way).
func (m *Manager) Reboot(ctx context.Context, name string) error {
	return m.simple(ctx, name, "send-key", map[string]any{"keys": []map[string]string{
		{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}})
}

func (m *Manager) simple(ctx context.Context, name, cmd string, args any) error {
	v, err := m.running(name)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if err := v.mon.run(ctx, cmd, args, nil); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	return nil
}

// Shutdown asks the guest to power off (ACPI, QMP system_powerdown) and
// kills qemu if it is still running after deadline. It reports whether
// qemu had to be killed. The VM is then stopped: leases released, taps
// deleted, the console log kept until Destroy.
func (m *Manager) Shutdown(ctx context.Context, name string, deadline time.Duration) (killed bool, err error) {
	v, err := m.running(name)
	if err != nil {
		return false, err
	}
	defer v.mu.Unlock()
	p := v.proc
	if err := v.mon.run(ctx, "system_powerdown", nil, nil); err != nil && !errors.Is(err, ErrNotRunning) {
		return false, fmt.Errorf("vm %s: %w", name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, deadline)
	werr := p.wait(wctx)
	cancel()
	if werr != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("vm %s: shutdown: %w", name, ctx.Err())
		}
		m.log.Info("guest did not power off in time; killing qemu", "vm", name, "deadline", deadline)
		if err := p.kill(); err != nil {
			return false, fmt.Errorf("vm %s: kill qemu: %w", name, err)
		}
		killed = true
	}
	why := "shut down"
	if killed {
		why = "killed after the shutdown deadline"
	}
	m.cleanupLocked(ctx, v, why)
	return killed, nil
}

// Destroy stops the VM at once (QMP quit, then SIGKILL) if it runs,
// releases its leases and taps, and removes it and its directory.
func (m *Manager) Destroy(ctx context.Context, name string) error {
	v, err := m.get(name)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if p := v.proc; p != nil {
		if v.mon != nil {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			v.mon.run(qctx, "quit", nil, nil)
			cancel()
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if p.wait(wctx) != nil {
			p.kill()
		}
		cancel()
	}
	m.cleanupLocked(ctx, v, "destroyed")
	close(v.quit)
	if err := os.RemoveAll(v.f.dir); err != nil {
		return fmt.Errorf("vm %s: remove %s: %w", name, v.f.dir, err)
	}
	m.mu.Lock()
	delete(m.vms, name)
	m.mu.Unlock()
	m.log.Info("vm destroyed", "vm", name)
	return nil
}

// Close lets go of every VM without stopping any: qemu keeps running and
// a later Open over the same Dir adopts it. Console output printed while no
// Manager is connected is lost (qemu drops it).
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	vms := make([]*machine, 0, len(m.vms))
	for _, v := range m.vms {
		vms = append(vms, v)
	}
	m.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		select {
		case <-v.quit:
		default:
			close(v.quit)
		}
		v.mu.Unlock()
		v.watchWG.Wait()
		v.pumpWG.Wait()
		v.mu.Lock()
		if v.mon != nil {
			v.mon.close()
			v.mon = nil
		}
		if v.proc != nil {
			v.proc.close()
			v.proc = nil
		}
		v.closeConsole()
		v.mu.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lock != nil {
		m.lock.Close() // releases the flock
		m.lock = nil
	}
	return nil
}

// Console returns a reader of the VM's serial console log, from the oldest
// kept byte; with follow it waits for more until closed, or until the VM
// stops (Read then returns console.ErrClosed after the last byte).
func (m *Manager) Console(name string, follow bool) (io.ReadCloser, error) {
	v, err := m.get(name)
	if err != nil {
		return nil, err
	}
	defer v.mu.Unlock()
	if v.log == nil || v.stopped {
		// Stopped (or not connected): read what the file holds.
		l, err := console.Open(v.f.console(), m.cfg.ConsoleBytes)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", name, err)
		}
		r := l.Reader(false)
		l.Close()
		return r, nil
	}
	return v.log.Reader(follow), nil
}

// AttachDisk hot-plugs md (a virtio disk) into a running VM: the lease is
// taken, then QMP blockdev-add of the NBD export and device_add of a
// virtio-blk-pci. It returns the new disk's id.
func (m *Manager) AttachDisk(ctx context.Context, name string, md Media) (string, error) {
	if md.Type == "cdrom" || md.Bus == "ide" {
		return "", fmt.Errorf("%w: hot-plug is for virtio disks only", ErrInvalid)
	}
	if err := md.validate(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	t, err := parseNBD(md.URL, m.cfg.LocalNBD)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := m.running(name)
	if err != nil {
		return "", err
	}
	defer v.mu.Unlock()
	for _, d := range v.st.Disks {
		if d.URL == t.URL() {
			return "", fmt.Errorf("vm %s: %w: %s is attached already as %s", name, ErrExists, d.URL, d.ID)
		}
	}
	n := v.st.NextDisk
	d := disk{ID: "disk" + strconv.Itoa(n), Node: "nbd" + strconv.Itoa(n), URL: t.URL(), Type: "disk", Bus: "virtio",
		ReadOnly: md.ReadOnly, IOTune: md.IOTune, target: t}
	if !d.ReadOnly {
		if err := m.acquire(ctx, name, d.URL); err != nil {
			return "", fmt.Errorf("vm %s: %w", name, err)
		}
	}
	fail := func(err error) (string, error) {
		if !d.ReadOnly {
			m.release(name, d.URL)
		}
		return "", fmt.Errorf("vm %s: attach %s: %w", name, d.URL, err)
	}
	bd := t.blockdev(d.Node)
	if d.ReadOnly {
		bd["read-only"] = true
	}
	if err := v.mon.run(ctx, "blockdev-add", bd, nil); err != nil {
		return fail(err)
	}
	if err := v.mon.run(ctx, "device_add", deviceAddArgs(d), nil); err != nil {
		v.mon.run(context.Background(), "blockdev-del", map[string]any{"node-name": d.Node}, nil)
		return fail(err)
	}
	if d.IOTune != nil {
		if err := v.mon.run(ctx, "block_set_io_throttle", throttleArgs(d.blockQDev(), *d.IOTune), nil); err != nil {
			m.log.Warn("throttle hot-plugged disk", "vm", name, "disk", d.ID, "err", err)
		}
	}
	v.st.Disks = append(v.st.Disks, d)
	v.st.NextDisk++
	if err := v.save(); err != nil {
		m.log.Warn("save state", "vm", name, "err", err)
	}
	m.log.Info("disk attached", "vm", name, "disk", d.ID, "url", d.URL)
	return d.ID, nil
}

// DetachDisk hot-unplugs a disk, named by id (disk1) or URL: QMP device_del,
// then waiting (until ctx ends) for the guest to let go (DEVICE_DELETED),
// then blockdev-del and the lease's release. If the guest does not let go
// the disk stays attached and the error says so.
func (m *Manager) DetachDisk(ctx context.Context, name, disk string) error {
	v, err := m.running(name)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	i := slices.IndexFunc(v.st.Disks, func(d diskT) bool { return d.ID == disk || d.URL == disk })
	if i < 0 {
		if t, err := parseNBD(disk, m.cfg.LocalNBD); err == nil {
			i = slices.IndexFunc(v.st.Disks, func(d diskT) bool { return d.URL == t.URL() })
		}
	}
	if i < 0 {
		return fmt.Errorf("vm %s: %w: %s", name, ErrNoDisk, disk)
	}
	d := v.st.Disks[i]
	deleted, cancel := v.mon.subscribe(func(e qmp.Event) bool {
		return e.Event == "DEVICE_DELETED" && e.Data["device"] == d.ID
	})
	defer cancel()
	// device_del may have been sent by an earlier DetachDisk whose wait
	// ended (the guest was slow or paused): then qemu says the unplug is
	// under way, or the device is already gone.
	if err := v.mon.run(ctx, "device_del", map[string]any{"id": d.ID}, nil); err != nil &&
		!strings.Contains(err.Error(), "in the process of unplug") && !strings.Contains(err.Error(), "not found") {
		return fmt.Errorf("vm %s: detach %s: %w", name, d.ID, err)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-deleted:
			break wait
		case <-tick.C:
			// The event may have come while nobody waited.
			if gone, err := v.deviceGone(ctx, d.ID); err == nil && gone {
				break wait
			}
		case <-ctx.Done():
			return fmt.Errorf("vm %s: detach %s: the guest did not release the device (%w); it is still attached (the unplug request stays pending: call DetachDisk again)", name, d.ID, ctx.Err())
		case <-v.mon.done:
			return fmt.Errorf("vm %s: detach %s: %w", name, d.ID, ErrNotRunning)
		}
	}
	if err := v.mon.run(ctx, "blockdev-del", map[string]any{"node-name": d.Node}, nil); err != nil {
		return fmt.Errorf("vm %s: detach %s: %w", name, d.ID, err)
	}
	v.st.Disks = slices.Delete(v.st.Disks, i, i+1)
	if err := v.save(); err != nil {
		m.log.Warn("save state", "vm", name, "err", err)
	}
	if !d.ReadOnly {
		m.release(name, d.URL)
	}
	m.log.Info("disk detached", "vm", name, "disk", d.ID, "url", d.URL)
	return nil
}

type diskT = disk

// deviceGone reports whether qdev id is no longer among the VM's devices.
func (v *machine) deviceGone(ctx context.Context, id string) (bool, error) {
	var props []struct {
		Name string `json:"name"`
	}
	if err := v.mon.run(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &props); err != nil {
		return false, err
	}
	return !slices.ContainsFunc(props, func(p struct {
		Name string `json:"name"`
	}) bool {
		return p.Name == id
	}), nil
}

// LimitDiskIO sets a disk's throttling (QMP block_set_io_throttle); a zero
// IOTune removes the limits.
func (m *Manager) LimitDiskIO(ctx context.Context, name, diskID string, t IOTune) error {
	if err := (Media{URL: "x", IOTune: &t}).validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := m.running(name)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	i := slices.IndexFunc(v.st.Disks, func(d diskT) bool { return d.ID == diskID })
	if i < 0 {
		return fmt.Errorf("vm %s: %w: %s", name, ErrNoDisk, diskID)
	}
	if err := v.mon.run(ctx, "block_set_io_throttle", throttleArgs(v.st.Disks[i].blockQDev(), t), nil); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	if t.effective() == (IOTune{}) {
		v.st.Disks[i].IOTune = nil
	} else {
		v.st.Disks[i].IOTune = &t
	}
	return v.save()
}
