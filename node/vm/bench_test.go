package vm

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkBootToConsole: from the call to the guest's first line after
// reading its disk (PATTERN: …) on the serial console, through the Manager
// (Create: leases, qemu -daemonize -S, QMP and console connect, cont; the
// console read back from the log) against plain qemu started with the same
// machine, kernel and disk arguments and its serial on stdout. Each
// iteration boots both, alternating which goes first (the machine is
// shared and noisy: compare the two means of one run). Run with
// -benchtime=Nx (each boot takes seconds under TCG).
func BenchmarkBootToConsole(b *testing.B) {
	requireBins(b, "qemu-system-x86_64", "qemu-nbd", "busybox", "cpio")
	url := nbdServer(b, "boot", "bench-pattern")
	m, _ := testManager(b, nil)
	ctx := context.Background()
	viaManager := func(i int) time.Duration {
		name := fmt.Sprintf("b%d", i)
		s := guestSpec(b, name, "halt", marker(), Media{URL: url})
		start := time.Now()
		if _, err := m.Create(ctx, s); err != nil {
			b.Fatal(err)
		}
		r, err := m.Console(name, true)
		if err != nil {
			b.Fatal(err)
		}
		waitLine(b, r, "PATTERN: bench-pattern")
		d := time.Since(start)
		r.Close()
		if err := m.Destroy(ctx, name); err != nil {
			b.Fatal(err)
		}
		return d
	}
	plain := func() time.Duration {
		s := guestSpec(b, "plain", "halt", marker(), Media{URL: url})
		t, _ := parseNBD(url, "")
		args := plainArgs(qemuArgs(&s, "tcg", files{"/nonexistent"}, []disk{{ID: "disk0", Node: "nbd0", Bus: "virtio", target: t}}, nil))
		start := time.Now()
		cmd := exec.Command("qemu-system-x86_64", args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitLine(b, out, "PATTERN: bench-pattern")
		d := time.Since(start)
		cmd.Process.Kill()
		cmd.Wait()
		return d
	}
	var tm, tp time.Duration
	n := 0
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			tm += viaManager(i)
			tp += plain()
		} else {
			tp += plain()
			tm += viaManager(i)
		}
		n++
	}
	b.ReportMetric(tm.Seconds()/float64(n), "manager-s/boot")
	b.ReportMetric(tp.Seconds()/float64(n), "plain-s/boot")
	b.ReportMetric(float64(tm)/float64(tp), "manager/plain")
}

// plainArgs drops what only the Manager needs (daemonize, paused start,
// pid file, QMP, console socket) and puts the serial port on stdout.
func plainArgs(a []string) []string {
	var out []string
	for i := 0; i < len(a); i++ {
		switch a[i] {
		case "-S", "-daemonize":
			continue
		case "-pidfile", "-qmp", "-chardev", "-serial":
			i++
			continue
		}
		out = append(out, a[i])
	}
	return slices.Concat(out, []string{"-serial", "stdio"})
}

func waitLine(b *testing.B, r interface{ Read([]byte) (int, error) }, want string) {
	b.Helper()
	done := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				done <- true
				return
			}
		}
		done <- false
	}()
	select {
	case ok := <-done:
		if !ok {
			b.Fatalf("console ended before %q", want)
		}
	case <-time.After(5 * time.Minute):
		b.Fatalf("no %q within 5 min", want)
	}
}
