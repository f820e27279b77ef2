package nbdbench

import (
	"bytes"
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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/memexport"
)

// Target names.
const (
	TargetZos     = "zos"
	TargetNbdkit  = "nbdkit-memory"
	TargetQemuNBD = "qemu-nbd-raw"
)

// Workload is one fio job.
type Workload struct {
	Name    string
	RW      string // fio --rw
	BS      string // fio --bs
	IODepth int
	Fsync   int // fio --fsync (0: none)
	Extra   []string
}

// DefaultWorkloads are the jobs of issue 18's benchmark: 4k random read,
// write and 50/50 mix at queue depth 1 (latency) and 32 (throughput), 1M
// sequential read and write, and 4k random writes with a FLUSH every 16.
var DefaultWorkloads = []Workload{
	{Name: "4k-randrw-qd32", RW: "randrw", BS: "4k", IODepth: 32, Extra: []string{"--rwmixread=50"}},
	{Name: "4k-randrw-qd1", RW: "randrw", BS: "4k", IODepth: 1, Extra: []string{"--rwmixread=50"}},
	{Name: "4k-randread-qd1", RW: "randread", BS: "4k", IODepth: 1},
	{Name: "4k-randread-qd32", RW: "randread", BS: "4k", IODepth: 32},
	{Name: "4k-randwrite-qd1", RW: "randwrite", BS: "4k", IODepth: 1},
	{Name: "4k-randwrite-qd32", RW: "randwrite", BS: "4k", IODepth: 32},
	{Name: "1m-seqread", RW: "read", BS: "1M", IODepth: 8},
	{Name: "1m-seqwrite", RW: "write", BS: "1M", IODepth: 8},
	{Name: "4k-randwrite-fsync16", RW: "randwrite", BS: "4k", IODepth: 32, Fsync: 16},
}

// MoreWorkloads are diagnostic jobs outside the set: the latency
// of one synced write at a time (one FLUSH per write, nothing to coalesce).
var MoreWorkloads = []Workload{
	{Name: "4k-randwrite-fsync1-qd1", RW: "randwrite", BS: "4k", IODepth: 1, Fsync: 1},
}

// JobNames lists the names of DefaultWorkloads and then MoreWorkloads,
// comma-separated (for help texts).
func JobNames() (def, more string) {
	var d, m []string
	for _, w := range DefaultWorkloads {
		d = append(d, w.Name)
	}
	for _, w := range MoreWorkloads {
		m = append(m, w.Name)
	}
	return strings.Join(d, ","), strings.Join(m, ",")
}

// Workloads returns the jobs of DefaultWorkloads and MoreWorkloads with the
// given names, in that order; no names means DefaultWorkloads. A job named
// again runs again, as NAME#2, NAME#3…, so that its results are its own
// (a job repeated after another measures the state that one left).
func Workloads(names []string) ([]Workload, error) {
	if len(names) == 0 {
		return slices.Clone(DefaultWorkloads), nil
	}
	all := append(slices.Clip(DefaultWorkloads), MoreWorkloads...)
	var jobs []Workload
	seen := map[string]int{}
	for _, name := range names {
		i := slices.IndexFunc(all, func(w Workload) bool { return w.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("nbdbench: unknown fio job %q", name)
		}
		w := all[i]
		if seen[name]++; seen[name] > 1 {
			w.Name = fmt.Sprintf("%s#%d", name, seen[name])
		}
		jobs = append(jobs, w)
	}
	return jobs, nil
}

// Config configures Run. Zero fields take defaults.
type Config struct {
	// Runtime of each job; default 10s.
	Runtime time.Duration
	// Size of each export; default 1 GiB.
	Size int64
	// Dir holds qemu-nbd's raw file; default a temporary directory.
	Dir string
	// Targets to run, in order; default zos, nbdkit-memory, qemu-nbd-raw.
	Targets []string
	// Workloads; default DefaultWorkloads.
	Workloads []Workload
	// ZosURI, if set, is the zos export to measure (nbd://host:port/name)
	// instead of an in-process server over memory.
	ZosURI string
	// Fio, Nbdkit, QemuNBD are the binaries; defaults from PATH.
	Fio, Nbdkit, QemuNBD string
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

// Result is one job on one target.
type Result struct {
	Target     string  `json:"target"`
	Workload   string  `json:"workload"`
	ReadIOPS   float64 `json:"read_iops"`
	WriteIOPS  float64 `json:"write_iops"`
	ReadMiBps  float64 `json:"read_mib_s"`
	WriteMiBps float64 `json:"write_mib_s"`
	P99Micros  float64 `json:"p99_us"` // completion latency, worst of read/write
	P50Micros  float64 `json:"p50_us"`
	P999Micros float64 `json:"p999_us"`
	// CPUCores is how many of the machine's CPUs were busy during the job
	// on average, whatever the process (fio, the server, the kernel):
	// near runtime.NumCPU the job is bound by the CPU, well below by
	// something else.
	CPUCores float64 `json:"cpu_cores,omitempty"`
}

// IOPS is read plus write operations per second.
func (r Result) IOPS() float64 { return r.ReadIOPS + r.WriteIOPS }

// MiBps is read plus write throughput.
func (r Result) MiBps() float64 { return r.ReadMiBps + r.WriteMiBps }

// Report is the outcome of Run.
type Report struct {
	Size      int64         `json:"size"`
	Runtime   time.Duration `json:"runtime"`
	Targets   []string      `json:"targets"`
	Workloads []string      `json:"workloads"`
	Results   []Result      `json:"results"`
}

// ErrMissingTool is returned when fio or an anchor binary is not installed.
var ErrMissingTool = errors.New("nbdbench: tool not installed")

func (c *Config) defaults() error {
	if c.Runtime == 0 {
		c.Runtime = 10 * time.Second
	}
	if c.Size == 0 {
		c.Size = 1 << 30
	}
	if len(c.Targets) == 0 {
		c.Targets = []string{TargetZos, TargetNbdkit, TargetQemuNBD}
	}
	if len(c.Workloads) == 0 {
		c.Workloads = DefaultWorkloads
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	look := func(p *string, name string) error {
		if *p != "" {
			return nil
		}
		path, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("%w: %s (Debian: apt-get install fio nbdkit qemu-utils)", ErrMissingTool, name)
		}
		*p = path
		return nil
	}
	if err := look(&c.Fio, "fio"); err != nil {
		return err
	}
	for _, t := range c.Targets {
		switch t {
		case TargetNbdkit:
			if err := look(&c.Nbdkit, "nbdkit"); err != nil {
				return err
			}
		case TargetQemuNBD:
			if err := look(&c.QemuNBD, "qemu-nbd"); err != nil {
				return err
			}
		case TargetZos:
		default:
			return fmt.Errorf("nbdbench: unknown target %q", t)
		}
	}
	if c.Size < 64<<20 || c.Size%(1<<20) != 0 {
		return fmt.Errorf("nbdbench: size %d must be a multiple of 1 MiB and at least 64 MiB", c.Size)
	}
	return nil
}

// Run runs every workload on every target and returns the results.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rep := &Report{Size: cfg.Size, Runtime: cfg.Runtime, Targets: cfg.Targets}
	for _, w := range cfg.Workloads {
		rep.Workloads = append(rep.Workloads, w.Name)
	}
	for _, target := range cfg.Targets {
		uri, stop, err := start(ctx, &cfg, target)
		if err != nil {
			return rep, fmt.Errorf("starting %s: %w", target, err)
		}
		cfg.Logger.Info("benchmarking", "target", target, "uri", uri)
		err = func() error {
			defer stop()
			if _, err := fio(ctx, &cfg, uri, Workload{Name: "fill", RW: "write", BS: "1M", IODepth: 8}, false); err != nil {
				return fmt.Errorf("filling %s: %w", target, err)
			}
			for _, w := range cfg.Workloads {
				r, err := fio(ctx, &cfg, uri, w, true)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", w.Name, target, err)
				}
				r.Target = target
				rep.Results = append(rep.Results, r)
				cfg.Logger.Info("result", "target", target, "workload", w.Name, "iops", int(r.IOPS()), "mib_s", int(r.MiBps()))
			}
			return nil
		}()
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// start brings a target up and returns its URI and a stop function.
func start(ctx context.Context, cfg *Config, target string) (string, func(), error) {
	switch target {
	case TargetZos:
		if cfg.ZosURI != "" {
			return cfg.ZosURI, func() {}, nil
		}
		return startZos(cfg)
	case TargetNbdkit:
		port, err := freePort()
		if err != nil {
			return "", nil, err
		}
		cmd := exec.CommandContext(ctx, cfg.Nbdkit, "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", port,
			"memory", strconv.FormatInt(cfg.Size, 10))
		return startProcess(cmd, "127.0.0.1:"+port, "nbd://127.0.0.1:"+port+"/")
	case TargetQemuNBD:
		dir := cfg.Dir
		cleanup := func() {}
		if dir == "" {
			d, err := os.MkdirTemp("", "nbdbench-")
			if err != nil {
				return "", nil, err
			}
			dir = d
			cleanup = func() { os.RemoveAll(d) }
		}
		file := filepath.Join(dir, "qemu-nbd.raw")
		f, err := os.Create(file)
		if err == nil {
			err = f.Truncate(cfg.Size)
			f.Close()
		}
		if err != nil {
			cleanup()
			return "", nil, err
		}
		port, err := freePort()
		if err != nil {
			cleanup()
			return "", nil, err
		}
		cmd := exec.CommandContext(ctx, cfg.QemuNBD, "-f", "raw", "-b", "127.0.0.1", "-p", port, "-x", "bench",
			"-t", "--shared=16", "--cache=writeback", "--aio=threads", file)
		uri, stop, err := startProcess(cmd, "127.0.0.1:"+port, "nbd://127.0.0.1:"+port+"/bench")
		if err != nil {
			cleanup()
			return "", nil, err
		}
		return uri, func() { stop(); os.Remove(file); cleanup() }, nil
	}
	return "", nil, fmt.Errorf("unknown target %q", target)
}

func startZos(cfg *Config) (string, func(), error) {
	exp, err := memexport.New(cfg.Size, memexport.Options{})
	if err != nil {
		return "", nil, err
	}
	exports := nbd.NewStaticExports()
	exports.Add(exp, nbd.ExportInfo{Name: "bench", MultiConn: true})
	srv, err := nbd.New(nbd.Config{Exports: exports, Logger: cfg.Logger})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	go func() {
		srv.Serve(context.Background(), ln)
		close(done)
	}()
	return "nbd://" + ln.Addr().String() + "/bench", func() { srv.Close(); <-done }, nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// startProcess starts cmd and waits until addr accepts connections.
func startProcess(cmd *exec.Cmd, addr, uri string) (string, func(), error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return uri, stop, nil
		}
		select {
		case err := <-exited:
			return "", nil, fmt.Errorf("%s exited: %v: %s", cmd.Path, err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("%s did not listen on %s", cmd.Path, addr)
		}
	}
}

// fio runs one job against uri. timed jobs run for cfg.Runtime; untimed
// ones (the fill) cover the whole export once.
func fio(ctx context.Context, cfg *Config, uri string, w Workload, timed bool) (Result, error) {
	args := []string{"--name=" + w.Name, "--ioengine=nbd", "--uri=" + uri,
		"--rw=" + w.RW, "--bs=" + w.BS, "--iodepth=" + strconv.Itoa(w.IODepth),
		"--size=" + strconv.FormatInt(cfg.Size, 10), "--output-format=json", "--norandommap",
		"--randrepeat=0", "--refill_buffers"}
	if timed {
		args = append(args, "--time_based", fmt.Sprintf("--runtime=%dms", cfg.Runtime.Milliseconds()), "--ramp_time=1s")
	}
	if w.Fsync > 0 {
		args = append(args, "--fsync="+strconv.Itoa(w.Fsync))
	}
	args = append(args, w.Extra...)
	var out, errb bytes.Buffer
	// fio forks a process per job unless --thread; a cancelled run must
	// not leave a job process writing to the export (and holding fio's
	// output pipes, so that Wait would block until it ends): fio runs in
	// its own process group, which cancellation kills as a whole.
	args = append(args, "--thread")
	cmd := exec.CommandContext(ctx, cfg.Fio, args...)
	cmd.Stdout = &out
	cmd.Stderr = &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	c0, cpuOK := readCPU()
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("fio: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	c1, cpuOK1 := readCPU()
	res, err := parseFio(out.Bytes(), w.Name)
	if err == nil && cpuOK && cpuOK1 {
		res.CPUCores = coresBusy(c0, c1, runtime.NumCPU())
	}
	return res, err
}

func parseFio(out []byte, name string) (Result, error) {
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:] // fio may print notes before the JSON
	}
	type side struct {
		IOPS  float64 `json:"iops"`
		BW    float64 `json:"bw"` // KiB/s
		ClatN struct {
			Percentile map[string]float64 `json:"percentile"`
		} `json:"clat_ns"`
	}
	var res struct {
		Jobs []struct {
			Error int  `json:"error"`
			Read  side `json:"read"`
			Write side `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return Result{}, fmt.Errorf("parsing fio output: %w", err)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 {
		return Result{}, fmt.Errorf("fio job failed: %s", out)
	}
	j := res.Jobs[0]
	pct := func(k string) float64 { return max(j.Read.ClatN.Percentile[k], j.Write.ClatN.Percentile[k]) / 1000 }
	p99 := pct("99.000000")
	return Result{
		Workload:   name,
		ReadIOPS:   j.Read.IOPS,
		WriteIOPS:  j.Write.IOPS,
		ReadMiBps:  j.Read.BW / 1024,
		WriteMiBps: j.Write.BW / 1024,
		P99Micros:  p99,
		P50Micros:  pct("50.000000"),
		P999Micros: pct("99.900000"),
	}, nil
}

// Get returns the result of a workload on a target.
func (r *Report) Get(target, workload string) (Result, bool) {
	for _, x := range r.Results {
		if x.Target == target && x.Workload == workload {
			return x, true
		}
	}
	return Result{}, false
}

// Ratio is zos over target for a workload: IOPS for 4k jobs, throughput
// otherwise (equal ratios either way for a fixed block size). 0 if either
// is missing.
func (r *Report) Ratio(target, workload string) float64 {
	z, ok1 := r.Get(TargetZos, workload)
	o, ok2 := r.Get(target, workload)
	if !ok1 || !ok2 || o.IOPS() == 0 {
		return 0
	}
	return z.IOPS() / o.IOPS()
}

// Markdown renders the report as a table with a ratio column per anchor.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fio nbd engine, %s per job, %d MiB export, all targets on 127.0.0.1 in one run.\n\n",
		r.Runtime, r.Size>>20)
	var anchors []string
	for _, t := range r.Targets {
		if t != TargetZos {
			anchors = append(anchors, t)
		}
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprint(tw, "| job\t target\t IOPS (r+w)\t MiB/s (r+w)\t p99 µs\t")
	for _, a := range anchors {
		fmt.Fprintf(tw, " zos / %s\t", a)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "|---\t---\t---\t---\t---\t")
	for range anchors {
		fmt.Fprint(tw, "---\t")
	}
	fmt.Fprintln(tw)
	for _, w := range r.Workloads {
		for _, t := range r.Targets {
			x, ok := r.Get(t, w)
			if !ok {
				continue
			}
			fmt.Fprintf(tw, "| %s\t %s\t %.0f\t %.0f\t %.0f\t", w, t, x.IOPS(), x.MiBps(), x.P99Micros)
			for _, a := range anchors {
				if t == TargetZos {
					fmt.Fprintf(tw, " %.2f×\t", r.Ratio(a, w))
				} else {
					fmt.Fprint(tw, " \t")
				}
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
	return b.String()
}
