package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/internal/testimage"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/corex"
)

// busyboxRoot is a root file system of the host's static busybox and the
// named applets as symlinks to it.
func busyboxRoot(t *testing.T, applets ...string) string {
	t.Helper()
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	if out, err := exec.Command("cp", "/usr/bin/busybox", filepath.Join(src, "bin/busybox")).CombinedOutput(); err != nil {
		t.Fatalf("busybox (busybox-static, scripts/deps.sh): %v %s", err, out)
	}
	for _, a := range applets {
		os.Symlink("busybox", filepath.Join(src, "bin", a))
	}
	return src
}

// ociArchive writes an OCI image archive (a tar of an OCI layout) whose
// one layer is the host's busybox with applets, plus /app/hello.
func ociArchive(t *testing.T, cfg testimage.Config) string {
	t.Helper()
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		t.Fatalf("busybox (busybox-static, scripts/deps.sh): %v", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	hdr := func(h *tar.Header, body []byte) {
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	hdr(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	hdr(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}, bb)
	for _, a := range []string{"sh", "sleep", "cat", "pwd", "echo"} {
		hdr(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	hdr(&tar.Header{Name: "app/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	hello := []byte("hello-from-the-layer\n")
	hdr(&tar.Header{Name: "app/hello", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(hello))}, hello)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := testimage.WriteOCILayout(dir, cfg, [][]byte{layer.Bytes()}, "ct:1"); err != nil {
		t.Fatal(err)
	}
	arch := filepath.Join(t.TempDir(), "img.tar")
	if out, err := exec.Command("tar", "-cf", arch, "-C", dir, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	return arch
}

// logs runs `zos container logs n1 ref`.
func (c *ctCluster) logs(t *testing.T, ref string) string {
	t.Helper()
	out, err := c.CLI(0, "container", "logs", "n1", ref)
	if err != nil {
		t.Fatalf("container logs %s: %v\n%s", ref, err, out)
	}
	return out
}

// TestContainerFromOCIImage: an flist built from an OCI image archive,
// pushed to the node's hub; corex.create without a command runs the
// image's entrypoint + cmd with its env, in its working directory.
func TestContainerFromOCIImage(t *testing.T) {
	c := startContainerNode(t)
	arch := ociArchive(t, testimage.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{`echo "oci-start GREETING=$GREETING WD=$(pwd)"; cat hello; exec sleep 1000`},
		Env:        []string{"PATH=/bin", "GREETING=from-image"},
		WorkingDir: "/app",
	})
	c.pushRoot(t, arch, "ct/oci")
	ctx := context.Background()
	id, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/oci", Name: "img"})
	if err != nil || id == 0 {
		t.Fatalf("corex.create: %d %v", id, err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		out := c.logs(t, "img")
		for _, want := range []string{"oci-start GREETING=from-image WD=/app\n", "hello-from-the-layer\n"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in the logs:\n%s", want, out)
			}
		}
		return nil
	})
	// The caller's env adds to the image's.
	if _, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/oci", Name: "img2", Env: map[string]string{"GREETING": "from-caller"}}); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		if out := c.logs(t, "img2"); !strings.Contains(out, "oci-start GREETING=from-caller WD=/app\n") {
			return fmt.Errorf("logs of img2:\n%s", out)
		}
		return nil
	})
	cs, _ := c.ac.ContainerList(ctx)
	tags := containerTags(t, c.Nodes[0].Dir)
	for _, ct := range cs {
		if err := c.ac.ContainerTerminate(ctx, ct.Name); err != nil {
			t.Fatal(err)
		}
	}
	if n := mountsOf(c.Nodes[0].Dir); n != 0 {
		t.Errorf("%d mounts under the node's dir after terminate", n)
	}
	checkTagsClean(t, c, tags, cs)
}

// metric returns the value of an unlabelled metric on the node's /metrics.
func (c *ctCluster) metric(t *testing.T, name string) float64 {
	t.Helper()
	b, err := exec.Command("curl", "-s", "--max-time", "20", "--cacert", c.CAFile(), "-H", "Authorization: Bearer "+c.Token, c.APIAddr(0)+"/metrics").Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// TestContainerRuntimeOps: logs (and -f), port forwards added and removed
// at runtime, core.bash dispatched into a container, the metrics, and a
// node killed with SIGKILL and started again.
func TestContainerRuntimeOps(t *testing.T) {
	c := startContainerNode(t)
	c.pushRoot(t, busyboxRoot(t, "sh", "sleep", "rm", "mkdir", "cat", "httpd", "echo", "touch"), "ct/ops")
	ctx := context.Background()

	// PID 1 prints a line each time /tmp/next appears.
	lg, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/ops", Name: "lg",
		Command: []string{"/bin/sh", "-c", `echo first-line; n=0; while :; do if [ -e /tmp/next ]; then rm /tmp/next; n=$((n+1)); echo next-line-$n; fi; sleep 0.2; done`}})
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		if out := c.logs(t, "lg"); out != "first-line\n" {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
	// -f shows lines written after it started.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	follow := exec.CommandContext(fctx, c.Bin, "container", "logs", "n1", "lg", "-f")
	follow.Env = c.Env(0)
	pr, pw := io.Pipe()
	follow.Stdout, follow.Stderr = pw, pw
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitLine := func(want string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("logs -f ended before %q", want)
				}
				if l == want {
					return
				}
			case <-deadline:
				t.Fatalf("logs -f: no %q within 60s", want)
			}
		}
	}
	waitLine("first-line")
	c.exec(t, "lg", "touch", "/tmp/next")
	waitLine("next-line-1")
	c.exec(t, "lg", "touch", "/tmp/next")
	waitLine("next-line-2")
	cancel()
	follow.Wait()
	pw.Close()

	// A port forward added at runtime serves; removed, it does not.
	web, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/ops", Name: "web",
		Command: []string{"/bin/sh", "-c", "mkdir -p /srv && echo served-by-web > /srv/index.html && exec httpd -f -p 80 -h /srv"}})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(20000 + rand.IntN(20000))
	curl := func() (string, error) {
		b, err := exec.Command("curl", "-s", "--max-time", "3", "http://127.0.0.1:"+port+"/").Output()
		return string(b), err
	}
	if out, err := curl(); err == nil {
		t.Fatalf("port %s serves before its forward: %q", port, out)
	}
	if err := c.ac.ContainerPortAdd(ctx, "web", port, 80); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		if out, err := curl(); err != nil || out != "served-by-web\n" {
			return fmt.Errorf("curl after portforward-add: %q %v", out, err)
		}
		return nil
	})
	if err := c.ac.ContainerPortAdd(ctx, "lg", port, 80); err == nil || !strings.Contains(err.Error(), "already forwarded") {
		t.Errorf("the same host port twice: %v", err)
	}
	if err := c.ac.ContainerPortRemove(ctx, "web", port); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		if out, err := curl(); err == nil {
			return fmt.Errorf("curl after portforward-remove still works: %q", out)
		}
		return nil
	})
	if err := c.ac.ContainerPortRemove(ctx, "web", port); err == nil {
		t.Errorf("removing a forward that is gone: no error")
	}

	// corex.dispatch of core.bash: the result names the container and
	// carries the script's exit code and output.
	bash, _ := json.Marshal(agent.BashArgs{Script: "echo in-$(cat /srv/index.html); exit 3"})
	args, _ := json.Marshal(corex.DispatchArgs{Container: corex.Ref("web"), Command: agent.Command{Command: "core.bash", Arguments: bash}})
	r, err := c.ac.Run(ctx, agent.Command{Command: "corex.dispatch", Arguments: args}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.Container != uint64(web) || r.Code != 3 || r.Streams[0] != "in-served-by-web\n" || r.State != agent.StateError {
		t.Errorf("dispatch core.bash: container %d (want %d) code %d state %s streams %q", r.Container, web, r.Code, r.State, r.Streams)
	}

	// Metrics.
	if v := c.metric(t, "zos_containers_running"); v != 2 {
		t.Errorf("zos_containers_running %v, want 2", v)
	}
	if v := c.metric(t, "zos_container_flist_mounts"); v != 1 {
		t.Errorf("zos_container_flist_mounts %v, want 1", v)
	}

	// kill -9 the node and start it again: its containers lost their root
	// with the FUSE mount, so it cleans them up, leaves nothing behind, and
	// serves new containers.
	before, _ := c.ac.ContainerList(ctx)
	if len(before) != 2 || before[0].ID != lg {
		t.Fatalf("containers before the restart: %v", before)
	}
	tags := containerTags(t, c.Nodes[0].Dir)
	if len(tags) != 2 {
		t.Fatalf("state of the containers on disk: %v", tags)
	}
	c.Kill(0)
	c.Restart(0)
	c.WaitReady(0, 2*time.Minute)
	testcluster.Eventually(t, 2*time.Minute, func() error {
		cs, err := c.ac.ContainerList(ctx)
		if err != nil || len(cs) != 0 {
			return fmt.Errorf("containers after the restart: %v %v", cs, err)
		}
		return nil
	})
	if n := mountsOf(c.Nodes[0].Dir); n != 0 {
		t.Errorf("%d mounts under the node's dir after the restart", n)
	}
	checkTagsClean(t, c, tags, before)
	if v := c.metric(t, "zos_containers_running"); v != 0 {
		t.Errorf("zos_containers_running after the restart %v, want 0", v)
	}
	if _, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/ops", Name: "after", Command: []string{"/bin/sh", "-c", "echo after-restart; exec sleep 1000"}}); err != nil {
		t.Fatalf("create after the restart: %v", err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		if out := c.logs(t, "after"); out != "after-restart\n" {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
	if v := c.metric(t, "zos_container_flist_mounts"); v != 1 {
		t.Errorf("zos_container_flist_mounts %v, want 1", v)
	}
}

// containerTags reads the tags (they name a container's veth, cgroups and
// runc id) from the state the node keeps of its containers.
func containerTags(t *testing.T, nodeDir string) []string {
	t.Helper()
	var tags []string
	filepath.WalkDir(nodeDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "state.json" || filepath.Base(filepath.Dir(filepath.Dir(p))) != "containers" {
			return nil
		}
		var rec struct {
			Tag string `json:"tag"`
		}
		if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &rec) == nil && rec.Tag != "" {
			tags = append(tags, rec.Tag)
		}
		return nil
	})
	return tags
}

// checkTagsClean: nothing of these containers is left — veth, cgroups,
// runc state, nft rules, processes — whatever else runs on the machine.
func checkTagsClean(t *testing.T, c *ctCluster, tags []string, cs []*corex.Info) {
	t.Helper()
	links, _ := exec.Command("ip", "-o", "link").Output()
	nft, _ := exec.Command("nft", "list", "ruleset").Output()
	runc, _ := exec.Command("runc", "list", "-q").Output()
	for _, tag := range tags {
		if strings.Contains(string(links), "zv"+tag) {
			t.Errorf("veth zv%s left", tag)
		}
		if out, _ := exec.Command("find", "/sys/fs/cgroup", "-maxdepth", "3", "-name", "zos-"+tag).Output(); len(out) > 0 {
			t.Errorf("cgroups left:\n%s", out)
		}
		if strings.Contains(string(runc), "zos-"+tag) {
			t.Errorf("runc container zos-%s left", tag)
		}
	}
	for _, ct := range cs {
		if strings.Contains(string(nft), ct.IP+" ") || strings.Contains(string(nft), ct.IP+":") {
			t.Errorf("nft rule for %s left:\n%s", ct.IP, nft)
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ct.Pid)); err == nil {
			if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] != "Z" {
				t.Errorf("process %d of %s left: %s", ct.Pid, ct.Name, b)
			}
		}
	}
}
