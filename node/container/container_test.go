package container

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRunCommand(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := e.m.Create(ctx, Spec{
		Root:     busyboxRoot(t),
		Name:     "runner",
		Hostname: "box1",
		Env:      map[string]string{"FOO": "bar"},
		Dir:      "/srv",
		Nics:     []Nic{{Type: "none"}},
		Cgroups:  Cgroups{Memory: 64 << 20},
		Command: []string{"sh", "-c", `echo "foo=$FOO"; echo "host=$(hostname)"; echo "pwd=$(pwd)"; echo "pid=$$";
			echo "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)";
			cat /etc/hostname; ls /etc/resolv.conf /etc/hosts; echo done`},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Wait(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	out := logs(t, e.m, c.ID)
	for _, want := range []string{"foo=bar\n", "host=box1\n", "pwd=/srv\n", "pid=1\n",
		fmt.Sprintf("mem=%d\n", 64<<20), "box1\n", "/etc/resolv.conf", "done\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	got, err := e.m.Get(ctx, c.ID)
	if err != nil || got.Status != StatusStopped {
		t.Fatalf("after exit: %+v %v", got, err)
	}
}

func TestImageConfig(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := e.m.Create(ctx, Spec{
		Root: busyboxRoot(t),
		Nics: []Nic{{Type: "none"}},
		Env:  map[string]string{"B": "spec"},
		Image: &Image{
			Entrypoint: []string{"sh", "-c"},
			Cmd:        []string{`echo "A=$A B=$B uid=$(id -u) pwd=$(pwd)"`},
			Env:        []string{"A=image", "B=image"},
			WorkingDir: "/etc",
			User:       "nobody",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.m.Wait(ctx, c.ID)
	if out := logs(t, e.m, c.ID); !strings.Contains(out, "A=image B=spec uid=65534 pwd=/etc") {
		t.Fatalf("image config not honoured: %q", out)
	}
}

func TestCapabilities(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, priv := range []bool{false, true} {
		c, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Privileged: priv, Nics: []Nic{{Type: "none"}},
			Command: []string{"sleep", "600"}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"mount", "-t", "tmpfs", "none", "/mnt"}})
		if err != nil {
			t.Fatal(err)
		}
		if priv != (res.Code == 0) {
			t.Errorf("privileged=%v: mount exit %d, stderr %q", priv, res.Code, res.Stderr)
		}
		res, err = e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"grep", "CapEff", "/proc/self/status"}})
		if err != nil || res.Code != 0 {
			t.Fatalf("grep CapEff: %v %+v", err, res)
		}
		var capEff uint64
		fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(string(res.Stdout), "CapEff:")), "%x", &capEff)
		const capSysAdmin = 21
		if has := capEff&(1<<capSysAdmin) != 0; has != priv {
			t.Errorf("privileged=%v: CapEff %x has CAP_SYS_ADMIN=%v", priv, capEff, has)
		}
		if err := e.m.Terminate(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExec(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Nics: []Nic{{Type: "none"}}, Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"sh", "-c", "read x; echo out $x $Y; echo err >&2; exit 3"},
		Env: map[string]string{"Y": "y"}, Stdin: "in\n"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != 3 || string(res.Stdout) != "out in y\n" || string(res.Stderr) != "err\n" {
		t.Fatalf("exec: %+v", res)
	}
	res, err = e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"sh", "-c", "yes | head -c 100000"}, MaxOutput: 1000})
	if err != nil || len(res.Stdout) != 1000 || !res.Truncated {
		t.Fatalf("bounded exec: %v len=%d truncated=%v", err, len(res.Stdout), res.Truncated)
	}
	if _, err := e.m.Exec(ctx, 999, ExecSpec{Args: []string{"true"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("exec in missing container: %v", err)
	}
}

func TestMemoryLimitEnforced(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Nics: []Nic{{Type: "none"}}, Cgroups: Cgroups{Memory: 16 << 20},
		Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	// A shell variable of 64 MiB in a 16 MiB container: the OOM killer ends it.
	res, err := e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"sh", "-c", `x=$(head -c 67108864 /dev/zero | tr '\0' a); echo survived ${#x}`}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Code == 0 || strings.Contains(string(res.Stdout), "survived") {
		t.Fatalf("a process over the memory limit was not killed: %+v", res)
	}
	t.Logf("over the limit: exit %d", res.Code)
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for range 2 {
		if _, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Nics: []Nic{{Type: "none"}}, Command: []string{"sleep", "600"}}); err != nil {
			t.Fatal(err)
		}
	}
	e.m.Create(ctx, Spec{Root: "/nonexistent", Command: []string{"true"}})
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			if m.Gauge != nil {
				got[key] = m.Gauge.GetValue()
			} else if m.Counter != nil {
				got[key] = m.Counter.GetValue()
			}
		}
	}
	if got["zos_containers_running"] != 2 || got["zos_container_creates_total{ok}"] != 2 || got["zos_container_creates_total{error}"] != 1 {
		t.Fatalf("metrics %v", got)
	}
}
