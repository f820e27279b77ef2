// Package report is the result model of `zos bench` and its writer: every
// workload (store, nbd, flist, raft, container, vm) returns a Workload of
// jobs, each job measured on zos and on every anchor in the same run, with
// latency percentiles where the workload has them and time series with
// events where it runs over time. A Report gathers workloads with the
// machine they ran on and the command that reproduces them; Write turns it
// into DIR/report.md, DIR/results.json and PNG + SVG plots.
//
// Usage:
//
//	rep := report.New(os.Args)          // machine, command, start time
//	rep.Add(storeWorkload)              // as each workload finishes
//	err := rep.Write("out")             // report.md, results.json, plots/
//
// Figures are whatever the machine gave: on a shared machine only the
// ratios between targets of one run mean anything, which report.md says.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Target names shared by workloads; anchors are named by what they are
// (qemu-nbd-raw, nbdkit-memory, reedsolomon+blake3, disk-ceiling,
// tar.gz-extract, native-disk, aim).
const Zos = "zos"

// Report is one `zos bench` run.
type Report struct {
	// Command is the exact command line that produced the report.
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	// Cluster says what was benchmarked: "embedded dev cluster, 3 nodes"
	// or "cluster at http://…".
	Cluster   string     `json:"cluster"`
	Notes     []string   `json:"notes,omitempty"`
	Workloads []Workload `json:"workloads"`
}

// Workload is one benchmark (store, nbd, …): its jobs, its time series and
// what happened during them.
type Workload struct {
	Name string `json:"name"`
	// Measures says in one sentence what the workload measures and how.
	Measures string   `json:"measures"`
	Jobs     []Job    `json:"jobs"`
	Series   []Series `json:"series,omitempty"`
	Events   []Event  `json:"events,omitempty"`
	Notes    []string `json:"notes,omitempty"`
}

// Job is one measurement (4k-randrw-qd32, PUT 16 KiB, cold start) on every
// target. Unit is the unit of Result.Value; LowerIsBetter is set for times.
type Job struct {
	Name          string `json:"name"`
	Unit          string `json:"unit"`
	LowerIsBetter bool   `json:"lower_is_better,omitempty"`
	// OpsUnit, when set, names the unit of the results' OpsPerSec
	// ("chunks/s"): the table then gives it beside Value, for anchors too.
	// The ratio stays Value's (for a fixed op size they are the same).
	OpsUnit string   `json:"ops_unit,omitempty"`
	Results []Result `json:"results"`
}

// Result is one job on one target.
type Result struct {
	Target string `json:"target"`
	Anchor bool   `json:"anchor"`
	// Value is the job's figure in Job.Unit: throughput, IOPS, ops/s or a
	// time.
	Value     float64  `json:"value"`
	OpsPerSec float64  `json:"ops_per_sec,omitempty"`
	MBps      float64  `json:"mb_per_sec,omitempty"` // 10^6 bytes/s
	Latency   *Latency `json:"latency,omitempty"`
	// CPU is the machine's CPUs busy during the job, on average (every
	// process: the client, the server, the kernel), where measured.
	CPU float64 `json:"cpu_cores,omitempty"`
	// Ratio is zos's Value over this anchor's (for a time, the anchor's
	// over zos's), so above 1 means zos is better; 1 for zos itself. Set
	// by Report.Add.
	Ratio float64 `json:"ratio,omitempty"`
	Note  string  `json:"note,omitempty"`
}

// Latency percentiles in microseconds.
type Latency struct {
	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
}

// Series is a figure over time (throughput of one target during a job).
type Series struct {
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Points []Point `json:"points"`
}

// Point is one sample: T seconds after the series began.
type Point struct {
	T float64 `json:"t"`
	V float64 `json:"v"`
}

// Event marks a moment of a workload's series ("node killed").
type Event struct {
	T     float64 `json:"t"`
	Label string  `json:"label"`
}

// New starts a report of the command args (os.Args) on this machine; dir
// is where the workloads keep their data (for the disk model), "" for the
// temporary directory.
func New(args []string, dir string) *Report {
	if dir == "" {
		dir = os.TempDir()
	}
	return &Report{Command: quoteArgs(args), Started: time.Now().UTC(), Machine: Probe(dir)}
}

// Add computes w's ratios and appends it.
func (r *Report) Add(w Workload) {
	for j := range w.Jobs {
		w.Jobs[j].setRatios()
	}
	r.Workloads = append(r.Workloads, w)
}

// Zos returns the zos result of j, if any.
func (j Job) Zos() (Result, bool) {
	for _, x := range j.Results {
		if !x.Anchor {
			return x, true
		}
	}
	return Result{}, false
}

func (j *Job) setRatios() {
	z, ok := j.Zos()
	if !ok {
		return
	}
	for i := range j.Results {
		x := &j.Results[i]
		switch {
		case !x.Anchor:
			x.Ratio = 1
		case x.Value == 0 || z.Value == 0:
			x.Ratio = 0
		case j.LowerIsBetter:
			x.Ratio = x.Value / z.Value
		default:
			x.Ratio = z.Value / x.Value
		}
	}
}

// Validate checks what every consumer relies on: named workloads and jobs,
// a zos result in every job, finite figures.
func (w Workload) Validate() error {
	if w.Name == "" {
		return fmt.Errorf("report: workload without a name")
	}
	for _, j := range w.Jobs {
		if j.Name == "" || j.Unit == "" {
			return fmt.Errorf("report: %s: job without a name or unit", w.Name)
		}
		if _, ok := j.Zos(); !ok {
			return fmt.Errorf("report: %s/%s: no zos result", w.Name, j.Name)
		}
	}
	return nil
}

// Write writes DIR/report.md, DIR/results.json and DIR/plots/*.{png,svg}.
func (r *Report) Write(dir string) error {
	if r.Finished.IsZero() {
		r.Finished = time.Now().UTC()
	}
	for _, w := range r.Workloads {
		if err := w.Validate(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, PlotDir), 0o755); err != nil {
		return err
	}
	plots, err := r.plot(filepath.Join(dir, PlotDir))
	if err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "results.json"), append(js, '\n')); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "report.md"), []byte(r.Markdown(plots, PlotDir)))
}

// Read decodes DIR/results.json.
func Read(dir string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report: %s: %w", dir, err)
	}
	return &r, nil
}

// writeFile writes a file whole: temp, fsync, rename.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
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
	return os.Rename(tmp, path)
}

func quoteArgs(args []string) string {
	out := slices.Clone(args)
	for i, a := range out {
		if i == 0 {
			out[i] = filepath.Base(a)
		}
		if a == "" || strings.ContainsAny(a, " \t'\"$\\*?") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
