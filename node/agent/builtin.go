package agent

import (
	"context"
	"fmt"
	"os"
	"sort"
	"syscall"

	"github.com/prometheus/procfs"
)

// SystemArgs are core.system's arguments (0-core's shape).
type SystemArgs struct {
	Name  string            `json:"name"`
	Args  []string          `json:"args"`
	Dir   string            `json:"dir"`
	Env   map[string]string `json:"env"`
	Stdin string            `json:"stdin"`
}

// BashArgs are bash's arguments.
type BashArgs struct {
	Script string `json:"script"`
	Stdin  string `json:"stdin"`
}

// JobArgs select a job (job.list, job.unschedule).
type JobArgs struct {
	ID string `json:"id"`
}

// KillArgs are job.kill's arguments (signal defaults to SIGTERM).
type KillArgs struct {
	ID     string `json:"id"`
	Signal int    `json:"signal"`
}

// ProcessArgs select a process (process.list).
type ProcessArgs struct {
	PID int `json:"pid"`
}

// ProcessKillArgs are process.kill's arguments.
type ProcessKillArgs struct {
	PID    int `json:"pid"`
	Signal int `json:"signal"`
}

func signalArg(n int) (syscall.Signal, error) {
	if n == 0 {
		return syscall.SIGTERM, nil
	}
	if n < 1 || n > 64 {
		return 0, Argf("signal %d out of range 1..64", n)
	}
	return syscall.Signal(n), nil
}

func registerBuiltins(m *Manager) {
	m.Register("core.ping", func(ctx context.Context, j *Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		return "PONG", nil
	})
	m.Register("core.system", func(ctx context.Context, j *Job) (any, error) {
		var a SystemArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		if a.Name == "" {
			return nil, Argf("name is required")
		}
		return nil, j.Exec(ctx, Process(a))
	})
	m.Register("bash", func(ctx context.Context, j *Job) (any, error) {
		var a BashArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		if a.Script == "" {
			return nil, Argf("script is required")
		}
		return nil, j.Exec(ctx, Process{Name: "bash", Args: []string{"-c", a.Script}, Stdin: a.Stdin})
	})
	m.Register("core.state", func(ctx context.Context, j *Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		self, err := ProcStats(os.Getpid())
		if err != nil {
			return nil, err
		}
		return struct {
			ProcessStats
			Jobs []JobInfo `json:"jobs"`
		}{self, m.Jobs()}, nil
	})
	m.Register("job.list", func(ctx context.Context, j *Job) (any, error) {
		var a JobArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		out := []JobInfo{}
		for _, inf := range m.Jobs() {
			if (a.ID == "" || inf.Cmd.ID == a.ID) && inf.Cmd.ID != j.Cmd.ID {
				out = append(out, inf)
			}
		}
		if a.ID != "" && len(out) == 0 {
			return nil, fmt.Errorf("no job %s", a.ID)
		}
		return out, nil
	})
	m.Register("job.kill", func(ctx context.Context, j *Job) (any, error) {
		var a KillArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		sig, err := signalArg(a.Signal)
		if err != nil {
			return nil, err
		}
		if a.ID == "" {
			return nil, Argf("id is required")
		}
		if a.ID == j.Cmd.ID {
			return nil, Argf("a job cannot kill itself")
		}
		return true, m.Kill(a.ID, sig)
	})
	m.Register("job.killall", func(ctx context.Context, j *Job) (any, error) {
		if err := j.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		n := 0
		for _, inf := range m.Jobs() {
			if inf.Cmd.ID != j.Cmd.ID && m.Kill(inf.Cmd.ID, syscall.SIGKILL) == nil {
				n++
			}
		}
		return n, nil
	})
	m.Register("job.unschedule", func(ctx context.Context, j *Job) (any, error) {
		var a JobArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		if a.ID == "" {
			return nil, Argf("id is required")
		}
		return true, m.Unschedule(a.ID)
	})
	m.Register("process.list", func(ctx context.Context, j *Job) (any, error) {
		var a ProcessArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		if a.PID != 0 {
			st, err := ProcStats(a.PID)
			if err != nil {
				return nil, err
			}
			return []ProcessStats{st}, nil
		}
		return Processes()
	})
	m.Register("process.kill", func(ctx context.Context, j *Job) (any, error) {
		var a ProcessKillArgs
		if err := j.Decode(&a); err != nil {
			return nil, err
		}
		sig, err := signalArg(a.Signal)
		if err != nil {
			return nil, err
		}
		if a.PID <= 1 || a.PID == os.Getpid() {
			return nil, Argf("refusing to signal pid %d", a.PID)
		}
		if err := syscall.Kill(a.PID, sig); err != nil {
			return nil, fmt.Errorf("kill %d: %w", a.PID, err)
		}
		return true, nil
	})
}

// ProcessStats describes a process, from /proc.
type ProcessStats struct {
	PID     int      `json:"pid"`
	PPID    int      `json:"ppid"`
	PGID    int      `json:"pgid"`
	Cmdline []string `json:"cmdline"`
	State   string   `json:"state"`
	// CPU is the average CPU use since the process started, in percent
	// of one core.
	CPU       float64 `json:"cpu"`
	RSS       uint64  `json:"rss"`
	VMS       uint64  `json:"vms"`
	StartTime int64   `json:"starttime"` // ms since the epoch
}

// ProcStats reads one process's stats.
func ProcStats(pid int) (ProcessStats, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return ProcessStats{}, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return ProcessStats{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return procStats(fs, p)
}

func procStats(fs procfs.FS, p procfs.Proc) (ProcessStats, error) {
	st, err := p.Stat()
	if err != nil {
		return ProcessStats{}, err
	}
	out := ProcessStats{PID: st.PID, PPID: st.PPID, PGID: st.PGRP, State: st.State, RSS: uint64(st.ResidentMemory()), VMS: uint64(st.VirtualMemory())}
	out.Cmdline, _ = p.CmdLine()
	if len(out.Cmdline) == 0 {
		out.Cmdline = []string{"[" + st.Comm + "]"}
	}
	if start, err := st.StartTime(); err == nil {
		out.StartTime = int64(start * 1000)
		if up := nowSeconds() - start; up > 0 {
			out.CPU = 100 * st.CPUTime() / up
		}
	}
	return out, nil
}

// Processes lists every process.
func Processes() ([]ProcessStats, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, err
	}
	ps, err := fs.AllProcs()
	if err != nil {
		return nil, err
	}
	out := make([]ProcessStats, 0, len(ps))
	for _, p := range ps {
		if st, err := procStats(fs, p); err == nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].PID < out[b].PID })
	return out, nil
}
