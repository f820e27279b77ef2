package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/zosproject/zos/node/container/network"
)

// Config configures a Manager. Zero fields take the defaults in brackets.
type Config struct {
	// Dir holds the manager's state, the containers' writable layers and
	// logs (required; on the node's disk).
	Dir string
	// Runc is the runc binary ["runc" on PATH].
	Runc string
	// Bridge is the default nic's bridge ["zos0"].
	Bridge string
	// BridgeCIDR is the address given to Bridge when it has to be created
	// ["172.18.0.1/16"]. Used only when Bridges is nil.
	BridgeCIDR string
	// Bridges provides bridges [network.Netlink creating Bridge].
	Bridges network.Bridges
	// NATTable is the zos-owned nftables table for forwards ["zos"].
	NATTable string
	// CgroupParent is the cgroup under which containers go ["zos"].
	CgroupParent string
	// LogMax bounds a container's log: past it the log is moved to log.1
	// [8 MiB].
	LogMax int64
	// StopTimeout is how long Terminate waits after SIGTERM [10s].
	StopTimeout time.Duration
	// Resolv is /etc/resolv.conf for images without one [the host's, minus
	// loopback name servers].
	Resolv     []byte
	Logger     *slog.Logger          // [slog.Default()]
	Registerer prometheus.Registerer // nil: no metrics
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return fmt.Errorf("container: Config.Dir is required")
	}
	if c.Runc == "" {
		c.Runc = "runc"
	}
	p, err := exec.LookPath(c.Runc)
	if err != nil {
		return ErrNoRuntime
	}
	c.Runc = p
	if c.Bridge == "" {
		c.Bridge = "zos0"
	}
	if c.BridgeCIDR == "" {
		c.BridgeCIDR = "172.18.0.1/16"
	}
	if c.NATTable == "" {
		c.NATTable = "zos"
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "zos"
	}
	if c.LogMax == 0 {
		c.LogMax = 8 << 20
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.Resolv == nil {
		c.Resolv = hostResolv()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Status of a container, as runc reports it.
const (
	StatusRunning = "running"
	StatusPaused  = "paused"
	StatusCreated = "created"
	StatusStopped = "stopped"
)

// Container is a snapshot of one container.
type Container struct {
	ID      uint32            `json:"id"`
	Name    string            `json:"name"`
	Tags    []string          `json:"tags,omitempty"`
	Spec    Spec              `json:"spec"`
	Created time.Time         `json:"created"`
	Status  string            `json:"status"`
	Pid     int               `json:"pid"`
	IP      string            `json:"ip,omitempty"`
	Bridge  string            `json:"bridge,omitempty"`
	Ports   map[string]uint16 `json:"ports,omitempty"` // canonical key → container port
	Log     string            `json:"log"`             // path of the log file
}

// record is a container's state on disk (Dir/containers/ID/state.json). It
// is written before each resource is made, so a crash at any point leaves
// enough to undo everything.
type record struct {
	ID        uint32            `json:"id"`
	Name      string            `json:"name"`
	Spec      Spec              `json:"spec"`
	Created   time.Time         `json:"created"`
	Tag       string            `json:"tag"` // random, names host-wide resources
	RuncID    string            `json:"runc_id"`
	Cgroup    string            `json:"cgroup"`
	Netns     string            `json:"netns,omitempty"`
	Veth      string            `json:"veth,omitempty"`
	Bridge    string            `json:"bridge,omitempty"`
	BridgeNet string            `json:"bridge_net,omitempty"`
	Gateway   string            `json:"gateway,omitempty"`
	IP        string            `json:"ip,omitempty"`
	Ports     map[string]uint16 `json:"ports,omitempty"`
	Pid       int               `json:"pid,omitempty"`
	Started   bool              `json:"started"`

	dir string
}

func (r *record) rootfs() string  { return filepath.Join(r.dir, "rootfs") }
func (r *record) logPath() string { return filepath.Join(r.dir, "log") }
func (r *record) fwdTag() string  { return "fwd:" + r.Tag }

func (r *record) save() error { return writeJSONAtomic(filepath.Join(r.dir, "state.json"), r) }

// Manager runs the containers of one node. Safe for concurrent use.
type Manager struct {
	cfg     Config
	runc    *runc
	nat     *network.NAT
	bridges network.Bridges
	log     *slog.Logger

	mu     sync.Mutex
	byID   map[uint32]*record
	names  map[string]uint32
	nextID uint32

	creates *prometheus.CounterVec
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  bool
}

// Open starts a manager over cfg.Dir. Containers left by a previous manager
// whose process still runs are re-attached (their forwards re-installed);
// every other one is cleaned up (mounts, veth, netns, rules, cgroups,
// address, state), so a node restart leaves nothing stray.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "containers"), filepath.Join(cfg.Dir, "runc")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
	}
	nat, err := network.NewNAT(cfg.NATTable)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:   cfg,
		runc:  &runc{bin: cfg.Runc, root: filepath.Join(cfg.Dir, "runc")},
		nat:   nat,
		log:   cfg.Logger.With("component", "container"),
		byID:  map[uint32]*record{},
		names: map[string]uint32{},
		stop:  make(chan struct{}),
	}
	m.bridges = cfg.Bridges
	if m.bridges == nil {
		m.bridges = &network.Netlink{Create: map[string]string{cfg.Bridge: cfg.BridgeCIDR}, NAT: nat, Forwarding: true}
	}
	if err := m.recover(ctx); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		m.creates = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zos_container_creates_total", Help: "Container creations by result (ok, error).",
		}, []string{"result"})
		running := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "zos_containers_running", Help: "Containers whose process is running.",
		}, m.countRunning)
		for _, c := range []prometheus.Collector{m.creates, running} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("container: metrics: %w", err)
			}
		}
	}
	m.wg.Add(1)
	go m.trimLoop()
	return m, nil
}

// Close stops the manager's background work. Containers keep running; a
// later Open finds them.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()
	return nil
}

func (m *Manager) recover(ctx context.Context) error {
	root := filepath.Join(m.cfg.Dir, "containers")
	ents, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(m.cfg.Dir, "next_id")); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			m.nextID = uint32(n)
		}
	}
	keep := map[string]bool{}
	for _, e := range ents {
		dir := filepath.Join(root, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			m.log.Warn("container dir without state; removing", "dir", dir, "err", err)
			if !isMounted(filepath.Join(dir, "rootfs")) {
				os.RemoveAll(dir)
			}
			continue
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			m.log.Error("bad container state; leaving it", "dir", dir, "err", err)
			continue
		}
		r.dir = dir
		if r.ID >= m.nextID {
			m.nextID = r.ID
		}
		st, err := m.runc.state(ctx, r.RuncID)
		live := err == nil && r.Started && (st.Status == StatusRunning || st.Status == StatusPaused)
		if !live {
			m.log.Info("cleaning up container from a previous run", "id", r.ID, "name", r.Name)
			if err := m.teardown(ctx, &r); err != nil {
				m.log.Error("cleanup failed", "id", r.ID, "err", err)
			}
			continue
		}
		if err := m.reinstallForwards(&r); err != nil {
			m.log.Error("re-installing port forwards", "id", r.ID, "err", err)
		}
		r.Pid = st.Pid
		m.byID[r.ID] = &r
		m.names[r.Name] = r.ID
		keep[r.Tag] = true
		m.log.Info("re-attached container", "id", r.ID, "name", r.Name, "pid", st.Pid)
	}
	if err := m.nat.DeleteTaggedExcept("fwd:", keep); err != nil {
		m.log.Error("removing stray forwards", "err", err)
	}
	return nil
}

func randomTag() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// portConflict reports whether key (canonical) collides with any forward of
// another container or of the same one.
func (m *Manager) portConflictLocked(k PortKey) error {
	for _, r := range m.byID {
		for other := range r.Ports {
			ok, err := ParsePortKey(other)
			if err != nil {
				continue
			}
			if overlaps(k, ok) {
				return fmt.Errorf("%w: %s (by container %d %s)", ErrPortForwarded, k, r.ID, r.Name)
			}
		}
	}
	return nil
}

func overlaps(a, b PortKey) bool {
	if a.Port != b.Port {
		return false
	}
	if a.Addr != nil && b.Addr != nil && !a.Addr.Equal(b.Addr) {
		return false
	}
	for _, p := range a.Protos {
		for _, q := range b.Protos {
			if p == q {
				return true
			}
		}
	}
	return false
}

// Create makes and starts a container. On error everything it made is
// undone.
func (m *Manager) Create(ctx context.Context, spec Spec) (c *Container, err error) {
	defer func() {
		if m.creates != nil {
			res := "ok"
			if err != nil {
				res = "error"
			}
			m.creates.WithLabelValues(res).Inc()
		}
	}()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(spec.Root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: root %s is not a directory", ErrBadSpec, spec.Root)
	}
	for h := range spec.Mount {
		if _, err := os.Stat(h); err != nil {
			return nil, fmt.Errorf("%w: mount source %s: %v", ErrBadSpec, h, err)
		}
	}
	ports := map[string]uint16{}
	keys := map[string]PortKey{}
	for k, v := range spec.Port {
		pk, _ := ParsePortKey(k)
		ports[pk.String()] = uint16(v)
		keys[pk.String()] = pk
	}

	// Reserve the name, an ID and the ports.
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.nextID++
	id := m.nextID
	// IDs are never reused, across restarts too: a client holding the ID of
	// a terminated container must not reach a new one.
	if err := writeFileAtomic(filepath.Join(m.cfg.Dir, "next_id"), []byte(strconv.Itoa(int(id))), 0o600); err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("container: %w", err)
	}
	name := spec.Name
	if name == "" {
		name = "c" + strconv.Itoa(int(id))
	}
	if _, taken := m.names[name]; taken {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNameTaken, name)
	}
	for _, k := range sortedKeys(keys) {
		if err := m.portConflictLocked(keys[k]); err != nil {
			m.mu.Unlock()
			return nil, err
		}
	}
	tag := randomTag()
	r := &record{
		ID: id, Name: name, Spec: spec, Created: time.Now().UTC(), Tag: tag,
		RuncID: "zos-" + tag,
		Cgroup: "/" + m.cfg.CgroupParent + "/zos-" + tag,
		Ports:  ports,
		dir:    filepath.Join(m.cfg.Dir, "containers", strconv.Itoa(int(id))),
	}
	m.byID[id] = r
	m.names[name] = id
	m.mu.Unlock()

	log := m.log.With("id", id, "name", name)
	defer func() {
		if err == nil {
			return
		}
		log.Warn("create failed; rolling back", "err", err)
		if terr := m.teardown(context.WithoutCancel(ctx), r); terr != nil {
			log.Error("rollback incomplete", "err", terr)
		}
		m.forget(r)
	}()

	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if err := r.save(); err != nil {
		return nil, fmt.Errorf("container: state: %w", err)
	}

	t0 := time.Now()
	// Root.
	if err := mountOverlay(spec.Root, filepath.Join(r.dir, "upper"), filepath.Join(r.dir, "work"), r.rootfs()); err != nil {
		return nil, err
	}

	tRoot := time.Now()
	// Network.
	nic := Nic{Type: "default"}
	if len(spec.Nics) > 0 {
		nic = spec.Nics[0]
	}
	netnsPath := ""
	if nic.Type != "none" {
		brName := m.cfg.Bridge
		if nic.Type == "bridge" {
			brName = nic.ID
		}
		br, err := m.bridges.Bridge(ctx, brName)
		if err != nil {
			return nil, err
		}
		ipam := m.ipam(br)
		r.Netns = filepath.Join(r.dir, "netns")
		r.Veth = "zv" + tag
		r.Bridge, r.BridgeNet, r.Gateway = br.Name, br.Net.String(), br.Gateway.String()
		ip, err := ipam.Allocate(tag)
		if err != nil {
			return nil, err
		}
		r.IP = ip.String()
		if err := r.save(); err != nil {
			return nil, fmt.Errorf("container: state: %w", err)
		}
		if err := network.NewNetns(r.Netns); err != nil {
			return nil, err
		}
		if err := network.AttachVeth(network.Attachment{HostName: r.Veth, Netns: r.Netns, Bridge: br, Addr: ip}); err != nil {
			return nil, err
		}
		if len(ports) > 0 {
			if err := m.forwardSetup(br); err != nil {
				return nil, err
			}
			for _, k := range sortedKeys(ports) {
				if err := m.addForward(r, keys[k], ports[k]); err != nil {
					return nil, err
				}
			}
		}
		netnsPath = r.Netns
	}

	tNet := time.Now()
	hostname := spec.Hostname
	if hostname == "" {
		hostname = name
	}
	if err := prepareRoot(r.rootfs(), hostname, r.IP, m.cfg.Resolv); err != nil {
		return nil, err
	}

	// Process.
	opts := []specOpt{
		withProcess(spec.args(), spec.env(hostname), spec.cwd()),
		withHostname(hostname),
		withNetNS(netnsPath),
		withMemory(int64(spec.Cgroups.Memory)),
		withCPU(spec.Cgroups.CPU),
		withBinds(spec.Mount),
		withCgroupsPath(r.Cgroup),
		withRootPath(r.rootfs()),
	}
	if spec.Privileged {
		opts = append(opts, withPrivileged())
	}
	if spec.Image != nil && spec.Image.User != "" {
		opts = append(opts, withUser(r.rootfs(), spec.Image.User))
	}
	oci, err := buildSpec(opts...)
	if err != nil {
		return nil, err
	}
	if err := writeJSONAtomic(filepath.Join(r.dir, "config.json"), oci); err != nil {
		return nil, fmt.Errorf("container: config.json: %w", err)
	}
	tSpec := time.Now()
	lf, err := os.OpenFile(r.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container: log: %w", err)
	}
	runcLog := filepath.Join(r.dir, "runc.log")
	err = m.runc.runDetached(ctx, r.RuncID, r.dir, filepath.Join(r.dir, "pid"), runcLog, lf)
	lf.Close()
	if err != nil {
		return nil, err
	}
	pid := 0
	if b, err := os.ReadFile(filepath.Join(r.dir, "pid")); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	// Started and Pid make the container visible to other calls: set them
	// (and save) under the lock, as PortForwardAdd changes the record under it.
	m.mu.Lock()
	r.Started, r.Pid = true, pid
	err = r.save()
	if err != nil {
		r.Started = false
	}
	m.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("container: state: %w", err)
	}
	log.Info("container started", "pid", r.Pid, "ip", r.IP,
		"root", tRoot.Sub(t0), "net", tNet.Sub(tRoot), "spec", tSpec.Sub(tNet), "runc", time.Since(tSpec))
	return m.snapshotStatus(r, StatusRunning), nil
}

func (m *Manager) ipam(br network.Bridge) *network.IPAM {
	return &network.IPAM{Dir: filepath.Join(m.cfg.Dir, "ipam", br.Name), Net: br.Net, Gateway: br.Gateway}
}

func (m *Manager) forget(r *record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byID[r.ID] == r {
		delete(m.byID, r.ID)
		delete(m.names, r.Name)
	}
}

// forwardSetup: what forwards from the host itself need on br.
func (m *Manager) forwardSetup(br network.Bridge) error {
	if err := network.SetRouteLocalnet(br.Name); err != nil {
		return err
	}
	return m.nat.Loopback(br.Name, br.Net)
}

func (m *Manager) addForward(r *record, k PortKey, to uint16) error {
	for _, p := range k.Protos {
		f := network.Forward{HostAddr: k.Addr, HostPort: k.Port, Proto: p, To: net.ParseIP(r.IP), ToPort: to}
		if err := m.nat.AddForward(r.fwdTag()+"/"+k.String()+"/"+string(p), f); err != nil {
			m.nat.DeleteTagged(r.fwdTag() + "/" + k.String())
			return err
		}
	}
	return nil
}

func (m *Manager) reinstallForwards(r *record) error {
	if err := m.nat.DeleteTagged(r.fwdTag()); err != nil {
		return err
	}
	if len(r.Ports) == 0 || r.IP == "" {
		return nil
	}
	_, ipn, err := net.ParseCIDR(r.BridgeNet)
	if err != nil {
		return err
	}
	if err := m.forwardSetup(network.Bridge{Name: r.Bridge, Net: ipn, Gateway: net.ParseIP(r.Gateway)}); err != nil {
		return err
	}
	for _, k := range sortedKeys(r.Ports) {
		pk, err := ParsePortKey(k)
		if err != nil {
			return err
		}
		if err := m.addForward(r, pk, r.Ports[k]); err != nil {
			return err
		}
	}
	return nil
}

// teardown undoes everything a record may have made, tolerating anything
// already gone. The state dir goes last, and only if the root is unmounted.
func (m *Manager) teardown(ctx context.Context, r *record) error {
	var errs []error
	if r.RuncID != "" {
		if st, err := m.runc.state(ctx, r.RuncID); err == nil {
			if st.Status != StatusStopped {
				m.runc.kill(ctx, r.RuncID, syscall.SIGKILL, true)
			}
			if err := m.runc.delete(ctx, r.RuncID, true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := m.nat.DeleteTagged(r.fwdTag()); err != nil {
		errs = append(errs, err)
	}
	if r.Veth != "" {
		errs = append(errs, network.DetachVeth(r.Veth))
	}
	if r.Netns != "" {
		errs = append(errs, network.DeleteNetns(r.Netns))
	}
	if r.IP != "" && r.Bridge != "" {
		ipam := &network.IPAM{Dir: filepath.Join(m.cfg.Dir, "ipam", r.Bridge)}
		errs = append(errs, ipam.Release(net.ParseIP(r.IP), r.Tag))
	}
	if r.Cgroup != "" {
		errs = append(errs, removeCgroups(r.Cgroup))
	}
	if r.dir != "" {
		rootErr := unmount(r.rootfs())
		errs = append(errs, rootErr)
		if rootErr == nil && !isMounted(r.rootfs()) {
			if err := os.RemoveAll(r.dir); err != nil {
				errs = append(errs, fmt.Errorf("container: remove %s: %w", r.dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the container's cgroup in every hierarchy, in case
// runc delete could not (it normally does).
func removeCgroups(rel string) error {
	var errs []error
	for _, p := range cgroupDirs(rel) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("container: cgroup %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupDirs lists where a cgroup path may live: each v1 hierarchy, the v2
// one of a hybrid host, or the unified root.
func cgroupDirs(rel string) []string {
	var out []string
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name(), rel))
		}
	}
	out = append(out, filepath.Join("/sys/fs/cgroup", rel))
	return out
}

func (m *Manager) lookup(id uint32) (*record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.byID[id]
	if !ok || !r.Started {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return r, nil
}

func (m *Manager) snapshot(ctx context.Context, r *record) *Container {
	c := m.snapshotStatus(r, StatusStopped)
	if st, err := m.runc.state(ctx, r.RuncID); err == nil {
		c.Status = st.Status
	}
	return c
}

func (m *Manager) snapshotStatus(r *record, status string) *Container {
	c := &Container{
		ID: r.ID, Name: r.Name, Tags: r.Spec.Tags, Spec: r.Spec, Created: r.Created,
		Pid: r.Pid, IP: r.IP, Bridge: r.Bridge, Log: r.logPath(), Status: status,
	}
	m.mu.Lock()
	if len(r.Ports) > 0 {
		c.Ports = make(map[string]uint16, len(r.Ports))
		for k, v := range r.Ports {
			c.Ports[k] = v
		}
	}
	m.mu.Unlock()
	return c
}

// Get returns container id.
func (m *Manager) Get(ctx context.Context, id uint32) (*Container, error) {
	r, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	return m.snapshot(ctx, r), nil
}

// ByName returns the container named name.
func (m *Manager) ByName(ctx context.Context, name string) (*Container, error) {
	m.mu.Lock()
	id, ok := m.names[name]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return m.Get(ctx, id)
}

// List returns every container, by ID.
func (m *Manager) List(ctx context.Context) []*Container { return m.Find(ctx, nil) }

// Find returns the containers carrying every one of tags, by ID.
func (m *Manager) Find(ctx context.Context, tags []string) []*Container {
	m.mu.Lock()
	var rs []*record
	for _, r := range m.byID {
		if r.Started && hasTags(r.Spec.Tags, tags) {
			rs = append(rs, r)
		}
	}
	m.mu.Unlock()
	sort.Slice(rs, func(i, j int) bool { return rs[i].ID < rs[j].ID })
	out := make([]*Container, 0, len(rs))
	for _, r := range rs {
		out = append(out, m.snapshot(ctx, r))
	}
	return out
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Wait blocks until container id's process has exited (or ctx ends).
func (m *Manager) Wait(ctx context.Context, id uint32) error {
	r, err := m.lookup(id)
	if err != nil {
		return err
	}
	return waitPid(ctx, r.Pid)
}

// waitPid waits for a process that is not our child: a pidfd turns readable
// when it exits (polling /proc when pidfds are unavailable).
func waitPid(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		for pidAlive(pid) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("container: wait: %w", err)
		}
		if n > 0 || !pidAlive(pid) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// pidAlive: the process exists and is not a zombie.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func (m *Manager) countRunning() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, r := range m.byID {
		if r.Started && pidAlive(r.Pid) {
			n++
		}
	}
	return float64(n)
}

// Terminate stops container id (SIGTERM, SIGKILL after StopTimeout) and
// removes everything made for it: process, cgroups, mounts, writable layer,
// veth, netns, address, forwards, state.
func (m *Manager) Terminate(ctx context.Context, id uint32) error {
	m.mu.Lock()
	r, ok := m.byID[id]
	if !ok || !r.Started {
		m.mu.Unlock()
		return fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	delete(m.byID, id)
	delete(m.names, r.Name)
	m.mu.Unlock()
	log := m.log.With("id", id, "name", r.Name)
	if pidAlive(r.Pid) {
		if err := m.runc.kill(ctx, r.RuncID, syscall.SIGTERM, false); err != nil {
			log.Debug("SIGTERM", "err", err)
		}
		wctx, cancel := context.WithTimeout(ctx, m.cfg.StopTimeout)
		waitPid(wctx, r.Pid)
		cancel()
	}
	err := m.teardown(context.WithoutCancel(ctx), r)
	if err != nil {
		log.Error("terminate incomplete", "err", err)
		return err
	}
	log.Info("container terminated")
	return nil
}

// PortForwardAdd forwards key ("8080", "127.0.0.1:8080|udp", …) to the
// container's port to.
func (m *Manager) PortForwardAdd(ctx context.Context, id uint32, key string, to uint16) error {
	k, err := ParsePortKey(key)
	if err != nil {
		return err
	}
	if to == 0 {
		return fmt.Errorf("%w: container port 0", ErrBadSpec)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.byID[id]
	if !ok || !r.Started {
		return fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	if r.IP == "" {
		return fmt.Errorf("%w: container %d has no nic", ErrBadSpec, id)
	}
	if err := m.portConflictLocked(k); err != nil {
		return err
	}
	_, ipn, _ := net.ParseCIDR(r.BridgeNet)
	if err := m.forwardSetup(network.Bridge{Name: r.Bridge, Net: ipn, Gateway: net.ParseIP(r.Gateway)}); err != nil {
		return err
	}
	if err := m.addForward(r, k, to); err != nil {
		return err
	}
	if r.Ports == nil {
		r.Ports = map[string]uint16{}
	}
	r.Ports[k.String()] = to
	if err := r.save(); err != nil {
		delete(r.Ports, k.String())
		m.nat.DeleteTagged(r.fwdTag() + "/" + k.String())
		return fmt.Errorf("container: state: %w", err)
	}
	return nil
}

// PortForwardRemove removes the forward key of container id.
func (m *Manager) PortForwardRemove(ctx context.Context, id uint32, key string) error {
	k, err := ParsePortKey(key)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.byID[id]
	if !ok || !r.Started {
		return fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	ck := k.String()
	if _, ok := r.Ports[ck]; !ok {
		return fmt.Errorf("%w: container %d has no forward %s", ErrNotFound, id, ck)
	}
	if err := m.nat.DeleteTagged(r.fwdTag() + "/" + ck); err != nil {
		return err
	}
	delete(r.Ports, ck)
	return r.save()
}

// Logs returns the container's output so far (the rotated part first).
func (m *Manager) Logs(id uint32) (io.ReadCloser, error) {
	r, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	var rs []io.Reader
	var cs []io.Closer
	for _, p := range []string{r.logPath() + ".1", r.logPath()} {
		if f, err := os.Open(p); err == nil {
			rs = append(rs, f)
			cs = append(cs, f)
		}
	}
	return &multiCloser{Reader: io.MultiReader(rs...), cs: cs}, nil
}

type multiCloser struct {
	io.Reader
	cs []io.Closer
}

func (m *multiCloser) Close() error {
	for _, c := range m.cs {
		c.Close()
	}
	return nil
}

func (m *Manager) trimLoop() {
	defer m.wg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.trimLogs()
		}
	}
}

// trimLogs bounds every log to LogMax by copying it to log.1 and truncating
// it (the container writes with O_APPEND, so it goes on at the new end; a
// line written between the copy and the truncate can be lost).
func (m *Manager) trimLogs() {
	m.mu.Lock()
	var paths []string
	for _, r := range m.byID {
		paths = append(paths, r.logPath())
	}
	m.mu.Unlock()
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || fi.Size() <= m.cfg.LogMax {
			continue
		}
		if err := rotate(p, m.cfg.LogMax); err != nil {
			m.log.Warn("log rotation", "path", p, "err", err)
		}
	}
}

func rotate(p string, max int64) error {
	src, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if off := fi.Size() - max; off > 0 {
		src.Seek(off, io.SeekStart)
	}
	dst, err := os.Create(p + ".1")
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	dst.Close()
	if err != nil {
		return err
	}
	return src.Truncate(0)
}
