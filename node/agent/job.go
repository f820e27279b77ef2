package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Job is one command being run. Handlers read its arguments with Decode
// and run processes with Exec; everything else is the Manager's.
type Job struct {
	Cmd Command

	m       *Manager
	started time.Time

	mu          sync.Mutex
	cancel      context.CancelCauseFunc // of the current run
	pid         int                     // process group of the current run (0: none)
	killed      bool
	unscheduled bool
	runs        int
	wake        chan struct{} // closed by kill/unschedule to end a recurring wait
	capture     *capture
	exitCode    int
	ranProcess  bool
	container   uint64 // set by SetContainer: the job ran in that container
}

// errKilled is the cause of a run cancelled by job.kill.
var errKilled = errors.New("agent: job killed")

// Decode decodes the job's arguments into v strictly (see DecodeArgs).
func (j *Job) Decode(v any) error { return DecodeArgs(j.Cmd.Arguments, v) }

// Manager returns the manager running the job.
func (j *Job) Manager() *Manager { return j.m }

// SetContainer marks the job as run inside container id (corex.dispatch):
// its JobResult carries the id.
func (j *Job) SetContainer(id uint64) {
	j.mu.Lock()
	j.container = id
	j.mu.Unlock()
}

// ReportProcess records a process the handler ran by other means (inside
// a container) as if Exec had run it: its output is parsed into levels,
// bounded, streamed, and makes the job's result with its exit code. It
// returns an *ExitError when code is not 0.
func (j *Job) ReportProcess(stdout, stderr []byte, code int) error {
	j.mu.Lock()
	if j.capture == nil {
		j.capture = newCapture(j.m.cfg.MaxOutput, j.m.streamSink(j.Cmd))
	}
	c := j.capture
	j.ranProcess, j.exitCode = true, code
	j.mu.Unlock()
	for i, b := range [][]byte{stdout, stderr} {
		pr := &parser{level: LevelStdout + i, emit: c.message, max: j.m.cfg.MaxOutput}
		readLines(bytes.NewReader(b), pr.line)
		pr.flush()
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// Process describes a process to run for a job.
type Process struct {
	Name  string
	Args  []string
	Dir   string
	Env   map[string]string
	Stdin string
}

// ExitError: the process ran and exited unsuccessfully.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("process exited with code %d", e.Code) }

// Exec runs p in its own process group, captures its output (bounded),
// streams it when the command asks, and returns when the process and
// every process left in its group are gone. A cancelled ctx (max_time,
// job.kill, shutdown) kills the whole group.
func (j *Job) Exec(ctx context.Context, p Process) error {
	if p.Name == "" {
		return Argf("name is required")
	}
	path, err := exec.LookPath(p.Name)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	cmd := exec.Command(path, p.Args...)
	cmd.Args[0] = p.Name
	cmd.Dir = p.Dir
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(p.Env))
	for k := range p.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+p.Env[k])
	}
	if p.Stdin != "" {
		f, err := stdinFile(p.Stdin)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	j.mu.Lock()
	if j.capture == nil {
		j.capture = newCapture(j.m.cfg.MaxOutput, j.m.streamSink(j.Cmd))
	}
	c := j.capture
	j.mu.Unlock()
	var readers sync.WaitGroup
	for i, r := range []*os.File{outR, errR} {
		pr := &parser{level: LevelStdout + i, emit: c.message, max: j.m.cfg.MaxOutput}
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer r.Close()
			readLines(r, pr.line)
			pr.flush()
		}()
	}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		readers.Wait()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	pgid := cmd.Process.Pid
	j.mu.Lock()
	j.pid, j.ranProcess = pgid, true
	j.mu.Unlock()
	j.m.running.Inc()
	defer j.m.running.Dec()

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		syscall.Kill(-pgid, syscall.SIGKILL)
		werr = <-waited
	}
	// The leader is reaped; kill what is left of its group so nothing of
	// the job outlives it, then drain the pipes.
	syscall.Kill(-pgid, syscall.SIGKILL)
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		// A process that left the group holds the pipes: stop reading.
		outR.Close()
		errR.Close()
		<-drained
	}
	j.mu.Lock()
	j.pid = 0
	j.mu.Unlock()
	code := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	j.mu.Lock()
	j.exitCode = code
	j.mu.Unlock()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if werr != nil {
		return &ExitError{Code: code}
	}
	return nil
}

// stdinFile returns a file to read s from: a pipe fed by a goroutine.
func stdinFile(s string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	go func() {
		w.WriteString(s)
		w.Close()
	}()
	return r, nil
}

// signal sends sig to the job's process group, or cancels a job that has
// no process.
func (j *Job) kill(sig syscall.Signal) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.killed = true
	j.closeWakeLocked()
	if j.pid != 0 && sig != 0 {
		syscall.Kill(-j.pid, sig)
		if sig == syscall.SIGKILL {
			j.cancel(errKilled)
		}
		return
	}
	if j.cancel != nil {
		j.cancel(errKilled)
	}
}

func (j *Job) closeWakeLocked() {
	select {
	case <-j.wake:
	default:
		close(j.wake)
	}
}

// JobInfo describes a running job (job.list, core.state).
type JobInfo struct {
	Cmd       Command `json:"cmd"`
	StartTime int64   `json:"starttime"`
	PID       int     `json:"pid,omitempty"`
	CPU       float64 `json:"cpu"`
	RSS       uint64  `json:"rss"`
	VMS       uint64  `json:"vms"`
	Runs      int     `json:"runs"`
}

func (j *Job) info() JobInfo {
	j.mu.Lock()
	inf := JobInfo{Cmd: j.Cmd, StartTime: j.started.UnixMilli(), PID: j.pid, Runs: j.runs}
	j.mu.Unlock()
	if inf.Cmd.Arguments == nil {
		inf.Cmd.Arguments = json.RawMessage("{}")
	}
	if inf.PID != 0 {
		if st, err := ProcStats(inf.PID); err == nil {
			inf.CPU, inf.RSS, inf.VMS = st.CPU, st.RSS, st.VMS
		}
	}
	return inf
}

// Emit adds one output line at level to the job, as a process's would be:
// kept (bounded) in the result's streams and pushed to stream:<id> when
// the command streams. Handlers that produce output without a process
// (kvm.console) use it.
func (j *Job) Emit(level int, msg string) {
	j.mu.Lock()
	if j.capture == nil {
		j.capture = newCapture(j.m.cfg.MaxOutput, j.m.streamSink(j.Cmd))
	}
	c := j.capture
	j.mu.Unlock()
	c.message(level, msg)
}
