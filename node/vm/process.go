package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// process is a qemu that this Manager did not fork-and-wait for (qemu
// daemonizes: it is reparented to init or the nearest subreaper). It is
// tracked through a pidfd, so a recycled pid is never signalled.
type process struct {
	pid   int
	pidfd int
}

// findProcess opens the qemu whose pid is in pidFile, checking that its
// command line names marker (the VM's QMP socket path), so that a stale
// pid file whose pid was reused by another program is not adopted.
func findProcess(pidFile, marker string) (*process, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("pid file %s: bad pid %q", pidFile, b)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d is not this VM's qemu (pid reused)", pid)
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
			unix.Close(fd)
			return nil, fmt.Errorf("pid %d has exited", pid)
		}
	}
	return &process{pid: pid, pidfd: fd}, nil
}

// wait blocks until the process exits or ctx ends.
func (p *process) wait(ctx context.Context) error {
	for {
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err == nil && n > 0 {
			return nil
		}
		if err != nil && err != unix.EINTR {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func (p *process) signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// kill sends SIGKILL and waits (up to a minute) for the exit.
func (p *process) kill() error {
	if err := p.signal(unix.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return p.wait(ctx)
}

// startTime is when the process started (for uptime), from /proc.
func (p *process) startTime() (time.Time, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return time.Time{}, err
	}
	i := bytes.LastIndexByte(st, ')')
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 20 {
		return time.Time{}, fmt.Errorf("short /proc/%d/stat", p.pid)
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // field 22: starttime, in clock ticks since boot
	if err != nil {
		return time.Time{}, err
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return time.Time{}, err
	}
	boot := time.Now().Add(-time.Duration(info.Uptime) * time.Second)
	return boot.Add(time.Duration(ticks) * time.Second / 100), nil // USER_HZ is 100 on Linux
}

func (p *process) close() { unix.Close(p.pidfd) }
