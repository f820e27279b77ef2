package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// runc drives the runc binary with its own --root, so one manager's
// containers are invisible to another's and to a stray `runc list`.
type runc struct {
	bin  string
	root string
}

// runcState is the output of `runc state`.
type runcState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"` // creating, created, running, paused, stopped
	Bundle string `json:"bundle"`
}

var errNoState = errors.New("container does not exist")

func (r *runc) command(ctx context.Context, logFile string, args ...string) *exec.Cmd {
	full := []string{"--root", r.root}
	if logFile != "" {
		full = append(full, "--log", logFile, "--log-format", "json")
	}
	cmd := exec.CommandContext(ctx, r.bin, append(full, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// run runs a runc command that writes nothing the caller wants, and turns a
// failure into an error carrying runc's message.
func (r *runc) run(ctx context.Context, logFile string, args ...string) error {
	cmd := r.command(ctx, logFile, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return r.fail(args[0], err, out.Bytes(), logFile)
	}
	return nil
}

func (r *runc) fail(op string, err error, out []byte, logFile string) error {
	msg := strings.TrimSpace(string(out))
	if m := lastRuncError(logFile); m != "" {
		msg = m
	}
	if len(msg) > 2000 {
		msg = msg[len(msg)-2000:]
	}
	if msg == "" {
		return fmt.Errorf("container: runc %s: %w", op, err)
	}
	return fmt.Errorf("container: runc %s: %v: %s", op, err, msg)
}

// lastRuncError is the last error-level message in a runc JSON log.
func lastRuncError(path string) string {
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			last = e.Msg
		}
	}
	return last
}

// run runs `runc run --detach` (create and start in one runc process: the
// network is ready before, in the namespace runc joins, so nothing needs the
// window between them); the container's init inherits stdio (stdin
// /dev/null, stdout and stderr the log file).
func (r *runc) runDetached(ctx context.Context, id, bundle, pidFile, runcLog string, stdio *os.File) error {
	cmd := r.command(ctx, runcLog, "run", "--detach", "--bundle", bundle, "--pid-file", pidFile, id)
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, stdio, stdio
	if err := cmd.Run(); err != nil {
		return r.fail("run", err, nil, runcLog)
	}
	return nil
}

func (r *runc) kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	return r.run(ctx, "", append(args, id, fmt.Sprint(int(sig)))...)
}

func (r *runc) delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	err := r.run(ctx, "", append(args, id)...)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	return err
}

func (r *runc) state(ctx context.Context, id string) (*runcState, error) {
	cmd := r.command(ctx, "", "state", id)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if strings.Contains(errb.String(), "does not exist") {
			return nil, errNoState
		}
		return nil, r.fail("state", err, errb.Bytes(), "")
	}
	var st runcState
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		return nil, fmt.Errorf("container: runc state: %w", err)
	}
	return &st, nil
}

// exec runs process (a runtime-spec Process as JSON in procFile) in the
// container and returns its exit code.
func (r *runc) exec(ctx context.Context, id, procFile string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	cmd := r.command(ctx, "", "exec", "--process", procFile, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	// runc exec forwards signals to the process; SIGKILL would orphan it.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("container: runc exec: %w", err)
	}
	return 0, nil
}
