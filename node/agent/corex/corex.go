package corex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/flist/cache"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/container"
)

// Config configures the corex commands.
type Config struct {
	// Dir holds the container manager's state (Dir/containers) and the
	// flist mounts (Dir/flists); on the node's disk.
	Dir string
	// Runc is the runc binary ["runc" on PATH].
	Runc string
	// Bridge is the default nic's bridge ["zos0"], created with
	// BridgeCIDR ["172.18.0.1/16"] at first use.
	Bridge     string
	BridgeCIDR string
	// NATTable ["zos"] and CgroupParent ["zos"] as in container.Config.
	NATTable     string
	CgroupParent string
	// Open opens an flist by REPO/NAME or URL with the fetcher of its
	// chunks (the node's hub). A missing flist should be an
	// *agent.ArgError (the caller's mistake).
	Open func(ctx context.Context, url string) (*flist.Reader, chunkstore.Fetcher, error)
	// Cache is the node's shared chunk cache.
	Cache *cache.Cache
	// Bridges is the agent's bridge.* implementation; missing bridges are
	// made with it.
	Bridges    *bridge.Bridges
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Corex runs the node's containers for the agent.
type Corex struct {
	cfg  Config
	log  *slog.Logger
	ct   *container.Manager
	pool *pool

	mu    sync.Mutex
	roots map[uint32]*shared // container → its flist mount
}

// Register opens the container manager (re-attaching or cleaning up what a
// previous process left) and adds the corex.* commands to m.
func Register(ctx context.Context, m *agent.Manager, cfg Config) (*Corex, error) {
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	if cfg.Dir == "" {
		return nil, errors.New("corex: Config.Dir is required")
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "zos0"
	}
	if cfg.BridgeCIDR == "" {
		cfg.BridgeCIDR = "172.18.0.1/16"
	}
	if err := checkCIDR(cfg.BridgeCIDR); err != nil {
		return nil, fmt.Errorf("corex: bridge cidr: %w", err)
	}
	log := cfg.Logger.With("component", "corex")
	x := &Corex{cfg: cfg, log: log, roots: map[uint32]*shared{},
		pool: &pool{dir: filepath.Join(cfg.Dir, "flists"), open: cfg.Open, cache: cfg.Cache, log: log,
			m: map[string]*shared{}, leaving: map[string]chan struct{}{}}}
	if err := os.MkdirAll(x.pool.dir, 0o700); err != nil {
		return nil, fmt.Errorf("corex: %w", err)
	}
	ct, err := container.Open(ctx, container.Config{
		Dir: filepath.Join(cfg.Dir, "containers"), Runc: cfg.Runc, Bridge: cfg.Bridge, BridgeCIDR: cfg.BridgeCIDR,
		Bridges:  &bridges{b: cfg.Bridges, def: cfg.Bridge, cidr: cfg.BridgeCIDR},
		NATTable: cfg.NATTable, CgroupParent: cfg.CgroupParent, Logger: cfg.Logger, Registerer: cfg.Registerer,
	})
	if err != nil {
		return nil, err
	}
	x.ct = ct
	// The flist mounts of a previous process died with it: its containers
	// have no root any more.
	for _, c := range ct.List(ctx) {
		if strings.HasPrefix(c.Spec.Root, x.pool.dir+string(filepath.Separator)) {
			log.Info("terminating a container of a previous run (its flist mount died with that process)", "id", c.ID, "name", c.Name)
			if err := ct.Terminate(ctx, c.ID); err != nil {
				log.Error("terminate", "id", c.ID, "err", err)
			}
		}
	}
	x.pool.cleanStale()
	if cfg.Registerer != nil {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "zos_container_flist_mounts", Help: "Flists mounted for containers (one per flist, shared).",
		}, func() float64 { return float64(x.pool.count()) })
		if err := cfg.Registerer.Register(g); err != nil {
			ct.Close()
			return nil, fmt.Errorf("corex: metrics: %w", err)
		}
	}
	x.register(m)
	return x, nil
}

// Containers is the container manager.
func (x *Corex) Containers() *container.Manager { return x.ct }

// Close stops the manager; containers keep running (see the package doc).
func (x *Corex) Close() error { return x.ct.Close() }

// Nic is a corex.create nic: container.Nic plus the cidr of a bridge to
// create when it is missing.
type Nic struct {
	Type   string    `json:"type"`
	ID     string    `json:"id,omitempty"`
	Config NicConfig `json:"config,omitempty"`
}

// NicConfig configures a nic.
type NicConfig struct {
	// CIDR is the bridge's address with prefix (10.20.0.1/24), used to
	// create the bridge when it does not exist.
	CIDR string `json:"cidr,omitempty"`
}

// CreateArgs are corex.create's arguments.
type CreateArgs struct {
	Root       string                          `json:"root"`
	Name       string                          `json:"name,omitempty"`
	Hostname   string                          `json:"hostname,omitempty"`
	Env        map[string]string               `json:"env,omitempty"`
	Mount      map[string]string               `json:"mount,omitempty"`
	Nics       []Nic                           `json:"nics,omitempty"`
	Port       map[string]container.PortNumber `json:"port,omitempty"`
	Tags       []string                        `json:"tags,omitempty"`
	Privileged bool                            `json:"privileged,omitempty"`
	Cgroups    container.Cgroups               `json:"cgroups,omitempty"`
	// Command replaces the image's entrypoint and cmd; Dir its working
	// directory.
	Command []string `json:"command,omitempty"`
	Dir     string   `json:"dir,omitempty"`
}

// Ref names a container: its id (a number, or digits) or its name.
type Ref string

// UnmarshalJSON takes a number or a string.
func (r *Ref) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*r = Ref(s)
		return nil
	}
	var n uint32
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("container: want an id or a name")
	}
	*r = Ref(strconv.FormatUint(uint64(n), 10))
	return nil
}

// ContainerArgs select a container.
type ContainerArgs struct {
	Container Ref `json:"container"`
}

// FindArgs are corex.find's arguments.
type FindArgs struct {
	Tags []string `json:"tags"`
}

// DispatchArgs are corex.dispatch's arguments: a 0-core command to run in
// the container (core.system or core.bash).
type DispatchArgs struct {
	Container Ref           `json:"container"`
	Command   agent.Command `json:"command"`
}

// PortArgs are corex.portforward-add/-remove's arguments.
type PortArgs struct {
	Container     Ref    `json:"container"`
	HostPort      string `json:"host_port"`
	ContainerPort uint16 `json:"container_port,omitempty"`
}

// LogsArgs are corex.logs's arguments.
type LogsArgs struct {
	Container Ref  `json:"container"`
	Follow    bool `json:"follow,omitempty"`
}

func (x *Corex) register(m *agent.Manager) {
	m.Register("corex.create", func(ctx context.Context, j *agent.Job) (any, error) {
		var a CreateArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.Create(ctx, a)
		if err != nil {
			return nil, err
		}
		return c.ID, nil
	})
	m.Register("corex.list", func(ctx context.Context, j *agent.Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		return x.byID(x.ct.List(ctx)), nil
	})
	m.Register("corex.find", func(ctx context.Context, j *agent.Job) (any, error) {
		var a FindArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		return x.byID(x.ct.Find(ctx, a.Tags)), nil
	})
	m.Register("corex.get", func(ctx context.Context, j *agent.Job) (any, error) {
		var a ContainerArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.get(ctx, a.Container)
		if err != nil {
			return nil, err
		}
		return x.info(c), nil
	})
	m.Register("corex.terminate", func(ctx context.Context, j *agent.Job) (any, error) {
		var a ContainerArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.get(ctx, a.Container)
		if err != nil {
			return nil, err
		}
		return nil, x.Terminate(ctx, c.ID)
	})
	m.Register("corex.dispatch", func(ctx context.Context, j *agent.Job) (any, error) {
		var a DispatchArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.get(ctx, a.Container)
		if err != nil {
			return nil, err
		}
		j.SetContainer(uint64(c.ID))
		es, err := execSpec(a.Command)
		if err != nil {
			return nil, err
		}
		res, err := x.ct.Exec(ctx, c.ID, es)
		if err != nil {
			return nil, userErr(err)
		}
		return nil, j.ReportProcess(res.Stdout, res.Stderr, res.Code)
	})
	m.Register("corex.portforward-add", func(ctx context.Context, j *agent.Job) (any, error) {
		var a PortArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.get(ctx, a.Container)
		if err != nil {
			return nil, err
		}
		return nil, userErr(x.ct.PortForwardAdd(ctx, c.ID, a.HostPort, a.ContainerPort))
	})
	m.Register("corex.portforward-remove", func(ctx context.Context, j *agent.Job) (any, error) {
		var a PortArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.get(ctx, a.Container)
		if err != nil {
			return nil, err
		}
		return nil, userErr(x.ct.PortForwardRemove(ctx, c.ID, a.HostPort))
	})
	m.Register("corex.logs", func(ctx context.Context, j *agent.Job) (any, error) {
		var a LogsArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		c, err := x.get(ctx, a.Container)
		if err != nil {
			return nil, err
		}
		args := []string{"-n", "+1"}
		if a.Follow {
			// Until the container's process exits (or the job is killed).
			args = append(args, "-F", "--pid="+strconv.Itoa(c.Pid))
		}
		if _, err := os.Stat(c.Log); err != nil {
			return nil, nil // no output yet
		}
		return nil, j.Exec(ctx, agent.Process{Name: "tail", Args: append(args, c.Log)})
	})
}

// Info is a container as corex.get/list/find show it: the container and
// the flist its root comes from.
type Info struct {
	*container.Container
	Flist string `json:"flist"`
}

func (x *Corex) info(c *container.Container) *Info {
	x.mu.Lock()
	defer x.mu.Unlock()
	i := &Info{Container: c}
	if s := x.roots[c.ID]; s != nil {
		i.Flist = s.url
	}
	return i
}

func (x *Corex) byID(cs []*container.Container) map[string]*Info {
	out := make(map[string]*Info, len(cs))
	for _, c := range cs {
		out[strconv.FormatUint(uint64(c.ID), 10)] = x.info(c)
	}
	return out
}

func (x *Corex) get(ctx context.Context, r Ref) (*container.Container, error) {
	if r == "" {
		return nil, agent.Argf("container (an id or a name) is required")
	}
	if n, err := strconv.ParseUint(string(r), 10, 32); err == nil {
		if c, err := x.ct.Get(ctx, uint32(n)); err == nil {
			return c, nil
		}
	}
	c, err := x.ct.ByName(ctx, string(r))
	if err != nil {
		return nil, userErr(fmt.Errorf("%w: %s", container.ErrNotFound, r))
	}
	return c, nil
}

// execSpec maps a dispatched 0-core command to an exec in the container.
func execSpec(cmd agent.Command) (container.ExecSpec, error) {
	switch cmd.Command {
	case "core.system":
		var a agent.SystemArgs
		if err := agent.DecodeArgs(cmd.Arguments, &a); err != nil {
			return container.ExecSpec{}, err
		}
		if a.Name == "" {
			return container.ExecSpec{}, agent.Argf("core.system: name is required")
		}
		return container.ExecSpec{Args: append([]string{a.Name}, a.Args...), Env: a.Env, Dir: a.Dir, Stdin: a.Stdin}, nil
	case "core.bash":
		var a agent.BashArgs
		if err := agent.DecodeArgs(cmd.Arguments, &a); err != nil {
			return container.ExecSpec{}, err
		}
		// 0-core feeds the script to bash; images without bash have sh.
		return container.ExecSpec{Args: []string{"/bin/sh", "-c", a.Script}, Stdin: a.Stdin}, nil
	case "":
		return container.ExecSpec{}, agent.Argf("command.command is required (core.system or core.bash)")
	default:
		return container.ExecSpec{}, agent.Argf("corex.dispatch runs core.system and core.bash in containers, not %s", cmd.Command)
	}
}

// userErr turns the caller's mistakes into 400 results.
func userErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *agent.ArgError
	if errors.As(err, &ae) {
		return err
	}
	if container.IsUserError(err) || errors.Is(err, flist.ErrCorrupt) ||
		errors.Is(err, flist.ErrVersion) || errors.Is(err, errBadBridge) {
		return &agent.ArgError{Err: err}
	}
	return err
}

// checkCIDR checks a bridge address: IPv4 with a prefix of at most /30.
func checkCIDR(s string) error {
	ip, ipn, err := net.ParseCIDR(s)
	if err != nil || ip.To4() == nil {
		return fmt.Errorf("%w: cidr %q: want the bridge's IPv4 address with a prefix, e.g. 10.20.0.1/24", errBadBridge, s)
	}
	if ones, _ := ipn.Mask.Size(); ones > 30 || ip.Equal(ipn.IP) {
		return fmt.Errorf("%w: cidr %q: want a host address in a /30 or larger network", errBadBridge, s)
	}
	return nil
}

// Create mounts (or shares) the flist and makes the container. Nothing is
// left behind on error.
func (x *Corex) Create(ctx context.Context, a CreateArgs) (*container.Container, error) {
	if a.Root == "" {
		return nil, agent.Argf("root (an flist: REPO/NAME or http(s)://…/NAME.flist) is required")
	}
	spec := container.Spec{Root: "/", Name: a.Name, Hostname: a.Hostname, Env: a.Env, Mount: a.Mount,
		Port: a.Port, Tags: a.Tags, Privileged: a.Privileged, Cgroups: a.Cgroups, Command: a.Command, Dir: a.Dir}
	for _, n := range a.Nics {
		if n.Config.CIDR != "" {
			if n.Type != "bridge" {
				return nil, agent.Argf("nic config.cidr is for nics of type bridge")
			}
			if err := checkCIDR(n.Config.CIDR); err != nil {
				return nil, userErr(err)
			}
			ctx = withCIDR(ctx, n.ID, n.Config.CIDR)
		}
		spec.Nics = append(spec.Nics, container.Nic{Type: n.Type, ID: n.ID})
	}
	// Check what needs no flist before mounting one.
	pre := spec
	if len(pre.Command) == 0 {
		pre.Image = &container.Image{Cmd: []string{"/sbin/init"}}
	}
	if err := pre.Validate(); err != nil {
		return nil, userErr(err)
	}
	if a.Name != "" {
		if _, err := x.ct.ByName(ctx, a.Name); err == nil {
			return nil, userErr(fmt.Errorf("%w: %q", container.ErrNameTaken, a.Name))
		}
	}
	for k := range a.Port {
		if err := x.portFree(ctx, k); err != nil {
			return nil, userErr(err)
		}
	}
	s, err := x.pool.acquire(ctx, a.Root)
	if err != nil {
		return nil, userErr(err)
	}
	spec.Root, spec.Image = s.dir, s.image
	c, err := x.ct.Create(ctx, spec)
	if err != nil {
		x.pool.release(s)
		return nil, userErr(err)
	}
	x.mu.Lock()
	x.roots[c.ID] = s
	x.mu.Unlock()
	return c, nil
}

// portFree is a pre-check (Create re-checks under its lock).
func (x *Corex) portFree(ctx context.Context, key string) error {
	k, err := container.ParsePortKey(key)
	if err != nil {
		return err
	}
	for _, c := range x.ct.List(ctx) {
		for other := range c.Ports {
			ok, err := container.ParsePortKey(other)
			if err != nil || ok.Port != k.Port {
				continue
			}
			if k.Addr != nil && ok.Addr != nil && !k.Addr.Equal(ok.Addr) {
				continue
			}
			for _, p := range k.Protos {
				for _, q := range ok.Protos {
					if p == q {
						return fmt.Errorf("%w: %s (by container %d %s)", container.ErrPortForwarded, key, c.ID, c.Name)
					}
				}
			}
		}
	}
	return nil
}

// Terminate removes container id and drops its flist mount reference.
func (x *Corex) Terminate(ctx context.Context, id uint32) error {
	if err := x.ct.Terminate(ctx, id); err != nil {
		return userErr(err)
	}
	x.mu.Lock()
	s := x.roots[id]
	delete(x.roots, id)
	x.mu.Unlock()
	if s != nil {
		x.pool.release(s)
	}
	return nil
}

// Flists lists the flists mounted for containers and how many use each.
func (x *Corex) Flists() map[string]int {
	x.pool.mu.Lock()
	defer x.pool.mu.Unlock()
	out := map[string]int{}
	keys := make([]string, 0, len(x.pool.m))
	for k := range x.pool.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out[x.pool.m[k].url] = x.pool.m[k].refs
	}
	return out
}
