package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/node/agent"
	agentclient "github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/agent/corex"
	"github.com/zosproject/zos/orchestrator/client"
)

// ContainerConfig configures the container start benchmark.
type ContainerConfig struct {
	// Binary is the zos binary: every round starts a fresh `zos node`
	// process of it (an empty flist cache), bootstrapped on a random
	// 127.X.Y.Z in a temporary directory. Required.
	Binary string
	// Root is the container's root file system; default the Debian tree the
	// tests cache in /var/cache/zos-test, else a busybox tree.
	Root string
	// Rounds of (fresh node: cold start, warm start; anchor); default 3.
	// The figures are the medians.
	Rounds   int
	Log      io.Writer // the nodes' output; default discarded
	Progress func(string)
}

// ContainerRound is one round's figures.
type ContainerRound struct {
	Cold, Warm, Anchor time.Duration
}

// Container measures container start — corex.create until the process's
// first output appears in its log — from an flist on the hub of a fresh
// single-node cluster (cold: the node's flist cache is empty; warm: a
// second container of the same flist), against downloading the same
// rootfs tar.gz over local HTTP, extracting it and `runc run` of it until
// its first output. Rounds interleave zos and the anchor so a change in
// the machine's load hits both.
func Container(ctx context.Context, cfg ContainerConfig) (report.Workload, []ContainerRound, error) {
	progress := orNop(cfg.Progress)
	w := report.Workload{Name: "container", Measures: "Container start: corex.create until the process's first output (`sh -c 'echo first-output'`), from an flist uploaded to the hub of a fresh single-node cluster — cold (empty node cache) and warm (a second container of the flist) — vs downloading the same rootfs tar.gz over local HTTP, extracting it and `runc run` of it until its first output. Medians of the rounds."}
	if cfg.Binary == "" {
		return w, nil, errors.New("bench container: no zos binary")
	}
	if os.Geteuid() != 0 {
		return w, nil, errors.New("bench container: containers need root")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return w, nil, errors.New("bench container: runc not installed (apt-get install runc)")
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 3
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	work, err := os.MkdirTemp("", "zos-bench-container-")
	if err != nil {
		return w, nil, err
	}
	defer os.RemoveAll(work)
	if cfg.Root == "" {
		if cfg.Root = testRoot("bookworm-minbase-ip", "bookworm-minbase"); cfg.Root == "" {
			if cfg.Root, _, err = defaultRoot(work); err != nil {
				return w, nil, err
			}
		}
	}
	tgz := filepath.Join(work, "www", "rootfs.tar.gz")
	os.MkdirAll(filepath.Dir(tgz), 0o755)
	progress("container: tar.gz of " + cfg.Root)
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "-czf", tgz, "-C", cfg.Root, ".").CombinedOutput(); err != nil {
		return w, nil, fmt.Errorf("tar: %v: %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return w, nil, err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(filepath.Dir(tgz)))}
	go srv.Serve(ln)
	defer srv.Close()
	spec, err := runcSpec(ctx, runc, work)
	if err != nil {
		return w, nil, err
	}
	var rounds []ContainerRound
	for i := 0; i < cfg.Rounds; i++ {
		var r ContainerRound
		progress(fmt.Sprintf("container: round %d/%d: anchor (download + extract + runc run)", i+1, cfg.Rounds))
		if r.Anchor, err = runcStart(ctx, runc, "http://"+ln.Addr().String()+"/rootfs.tar.gz", filepath.Join(work, "bundle"), spec); err != nil {
			return w, rounds, fmt.Errorf("anchor: %w", err)
		}
		progress(fmt.Sprintf("container: round %d/%d: fresh zos node, upload, cold and warm start", i+1, cfg.Rounds))
		if r.Cold, r.Warm, err = zosStart(ctx, cfg, tgz); err != nil {
			return w, rounds, err
		}
		rounds = append(rounds, r)
	}
	med := func(f func(ContainerRound) time.Duration) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r).Seconds()
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	anchor := med(func(r ContainerRound) time.Duration { return r.Anchor })
	for _, j := range []struct {
		name string
		f    func(ContainerRound) time.Duration
	}{{"start cold", func(r ContainerRound) time.Duration { return r.Cold }}, {"start warm", func(r ContainerRound) time.Duration { return r.Warm }}} {
		w.Jobs = append(w.Jobs, report.Job{Name: j.name, Unit: "s", LowerIsBetter: true, Results: []report.Result{
			{Target: report.Zos, Value: med(j.f)}, {Target: "tar.gz-extract+runc-run", Anchor: true, Value: anchor}}})
	}
	w.Notes = append(w.Notes, fmt.Sprintf("root %s (tar.gz %s), %d rounds, aim ≤ 0.2× the anchor", cfg.Root, humanFile(tgz), len(rounds)))
	for i, r := range rounds {
		w.Notes = append(w.Notes, fmt.Sprintf("round %d: cold %.3fs, warm %.3fs, anchor %.3fs", i+1, r.Cold.Seconds(), r.Warm.Seconds(), r.Anchor.Seconds()))
	}
	return w, rounds, nil
}

// testRoot is the first of the tests' cached root file systems that exists.
func testRoot(names ...string) string {
	base := os.Getenv("ZOS_TEST_CACHE")
	if base == "" {
		base = "/var/cache/zos-test"
	}
	for _, n := range names {
		if d := filepath.Join(base, n); exists(filepath.Join(d, "bin/sh")) {
			return d
		}
	}
	return ""
}

// runcSpec is `runc spec`'s config.json made to run sh -c 'echo
// first-output' without a terminal in a writable rootfs.
func runcSpec(ctx context.Context, runc, work string) ([]byte, error) {
	dir := filepath.Join(work, "spec")
	os.MkdirAll(dir, 0o755)
	if out, err := exec.CommandContext(ctx, runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %v: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	p := s["process"].(map[string]any)
	p["terminal"] = false
	p["args"] = []string{"/bin/sh", "-c", "echo first-output"}
	s["root"] = map[string]any{"path": "rootfs", "readonly": false}
	return json.Marshal(s)
}

// runcStart downloads and extracts the tar.gz into bundle/rootfs and runs
// it with runc until its first output; it removes the bundle.
func runcStart(ctx context.Context, runc, url, bundle string, spec []byte) (time.Duration, error) {
	defer os.RemoveAll(bundle)
	id := "zos-bench-" + strconv.FormatUint(rand.Uint64(), 16)
	start := time.Now()
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	tar := exec.CommandContext(ctx, "tar", "--numeric-owner", "-xzf", "-", "-C", filepath.Join(bundle, "rootfs"))
	tar.Stdin = resp.Body
	out, err := tar.CombinedOutput()
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("extract: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o644); err != nil {
		return 0, err
	}
	run := exec.CommandContext(ctx, runc, "run", "--bundle", bundle, id)
	stdout, err := run.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr limitedBuffer
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		return 0, err
	}
	defer exec.Command(runc, "delete", "--force", id).Run()
	line, rerr := bufio.NewReader(stdout).ReadString('\n')
	took := time.Since(start)
	werr := run.Wait()
	if line != "first-output\n" {
		return 0, fmt.Errorf("runc run: %q %v %v: %s", line, rerr, werr, stderr.String())
	}
	return took, nil
}

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b) < 8192 {
		l.b = append(l.b, p[:min(len(p), 8192-len(l.b))]...)
	}
	return len(p), nil
}
func (l *limitedBuffer) String() string { return string(l.b) }

// zosStart starts a fresh node, uploads tgz to its hub and measures a
// cold and a warm container start from it; it leaves nothing behind.
func zosStart(ctx context.Context, cfg ContainerConfig, tgz string) (cold, warm time.Duration, err error) {
	n, err := startContainerNode(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer n.stop()
	f, err := os.Open(tgz)
	if err != nil {
		return 0, 0, err
	}
	up, err := n.api.Hub().UploadArchive(ctx, "", "bench-container", "rootfs.tar.gz", f)
	f.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("upload to the node's hub: %w", err)
	}
	root := up.Entry.Repo + "/" + up.Entry.Name
	for i, d := range []*time.Duration{&cold, &warm} {
		if *d, err = n.start(ctx, root, fmt.Sprintf("bench-%d", i)); err != nil {
			return 0, 0, err
		}
	}
	return cold, warm, nil
}

type benchNode struct {
	cmd    *exec.Cmd
	dir    string
	bridge string
	ac     *agentclient.Client
	api    *client.Client
}

// start creates a container of root and returns the time until its first
// output is in its log (read on this host: the node runs here).
func (n *benchNode) start(ctx context.Context, root, name string) (time.Duration, error) {
	t0 := time.Now()
	if _, err := n.ac.ContainerCreate(ctx, corex.CreateArgs{Root: root, Name: name, Command: []string{"/bin/sh", "-c", "echo first-output"}}); err != nil {
		return 0, fmt.Errorf("corex.create: %w", err)
	}
	ct, err := n.ac.ContainerGet(ctx, name)
	if err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Millisecond) {
		if b, _ := os.ReadFile(ct.Log); len(b) > 0 {
			if string(b) != "first-output\n" {
				return 0, fmt.Errorf("container %s printed %q", name, b)
			}
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("container %s: no output in %s within 2 minutes", name, ct.Log)
		}
	}
}

func startContainerNode(ctx context.Context, cfg ContainerConfig) (*benchNode, error) {
	dir, err := os.MkdirTemp("", "zos-bench-node-")
	if err != nil {
		return nil, err
	}
	token := "bench-" + strconv.FormatUint(rand.Uint64(), 16)
	ip := fmt.Sprintf("127.%d.%d.%d", 20+rand.IntN(200), rand.IntN(250), 1+rand.IntN(250))
	n := &benchNode{dir: dir, bridge: "zb" + strconv.FormatUint(rand.Uint64()%(1<<32), 16)}
	n.cmd = exec.Command(cfg.Binary, "node", "--dir", dir, "--bind", ip, "--bootstrap", "--token", token, "--log-level", "warn",
		"--container-bridge", n.bridge, "--container-cidr", fmt.Sprintf("10.198.%d.1/24", rand.IntN(250)))
	n.cmd.Stdout, n.cmd.Stderr = cfg.Log, cfg.Log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n.ac = agentclient.New(net.JoinHostPort(ip, "6379"), token)
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		if r, err := n.ac.Run(rctx, agent.Command{Command: "core.ping"}, 2*time.Second); err == nil && r.State == agent.StateSuccess {
			break
		}
		if rctx.Err() != nil {
			n.stop()
			return nil, errors.New("the zos node under test did not answer core.ping within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tc, err := client.CAConfig(filepath.Join(dir, "tls", "ca.pem"))
	if err != nil {
		n.stop()
		return nil, err
	}
	n.api = client.NewTLS("https://"+net.JoinHostPort(ip, "5000"), token, tc)
	if err := n.api.WaitReady(rctx); err != nil {
		n.stop()
		return nil, fmt.Errorf("the zos node under test is not ready: %w", err)
	}
	return n, nil
}

// stop terminates the node's containers, stops it, removes its bridge and
// directory.
func (n *benchNode) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if cs, err := n.ac.ContainerList(ctx); err == nil {
		for _, c := range cs {
			n.ac.ContainerTerminate(ctx, agentclient.RefOf(c.ID))
		}
	}
	n.ac.JSON(ctx, "bridge.delete", map[string]string{"name": n.bridge}, nil)
	n.ac.Close()
	n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
	exec.Command("ip", "link", "del", n.bridge).Run()
	// A node on a bridge other than zos0 keeps its forwards in table
	// zos_BRIDGE and its containers' cgroups under zos_BRIDGE.
	exec.Command("nft", "delete", "table", "ip", "zos_"+n.bridge).Run()
	for _, d := range cgroupDirs("zos_" + n.bridge) {
		os.Remove(d)
	}
	os.RemoveAll(n.dir)
}

// cgroupDirs are the directories named name in every cgroup hierarchy.
func cgroupDirs(name string) []string {
	a, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	b, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", name))
	return append(a, b...)
}
