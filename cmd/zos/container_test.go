package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/client"
	"github.com/zosproject/zos/node/agent/corex"
	"github.com/zosproject/zos/node/container"
)

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// debianRoot is a Debian minbase root file system with iproute2 and
// procps, built with debootstrap once per test binary and kept in
// ZOS_TEST_CACHE (default /var/cache/zos-test) for the next run: it takes
// a minute or two.
func debianRoot(t testing.TB) string {
	t.Helper()
	rootfsOnce.Do(func() {
		base := os.Getenv("ZOS_TEST_CACHE")
		if base == "" {
			base = filepath.Join(os.TempDir(), "zos-test-cache")
			if _, err := os.Stat("/var/cache/zos-test"); err == nil {
				base = "/var/cache/zos-test"
			}
		}
		dir := filepath.Join(base, "bookworm-minbase-ip")
		if _, err := os.Stat(filepath.Join(dir, "sbin/ip")); err == nil {
			rootfsDir = dir
			return
		}
		os.MkdirAll(base, 0o755)
		tmp, err := os.MkdirTemp(base, "debootstrap-")
		if err != nil {
			rootfsErr = err
			return
		}
		out, err := exec.Command("debootstrap", "--variant=minbase", "--include=iproute2,procps", "bookworm", tmp,
			"http://deb.debian.org/debian").CombinedOutput()
		if err != nil {
			os.RemoveAll(tmp)
			rootfsErr = fmt.Errorf("debootstrap: %v\n%s", err, tail(string(out), 2000))
			return
		}
		if err := os.Rename(tmp, dir); err != nil {
			rootfsErr = err
			return
		}
		rootfsDir = dir
	})
	if rootfsErr != nil {
		t.Fatal(rootfsErr)
	}
	return rootfsDir
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// containerCluster starts one real node with a container bridge of its own
// (never the developer's zos0) and registers the cleanup of everything
// containers make.
type ctCluster struct {
	*testcluster.Cluster
	ac     *client.Client
	bridge string
	gw     string
}

func startContainerNode(t *testing.T) *ctCluster {
	if os.Geteuid() != 0 {
		t.Fatal("containers need root (CI runs as root)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc not installed (scripts/deps.sh)")
	}
	br := "zt" + randHex(4)
	b := make([]byte, 1)
	rand.Read(b)
	gw := fmt.Sprintf("10.197.%d.1", b[0])
	c := testcluster.Start(t, 1, testcluster.Options{Args: []string{"--container-bridge", br, "--container-cidr", gw + "/24"}})
	ac := client.New(net.JoinHostPort(c.Nodes[0].IP, "6379"), c.Token)
	ctc := &ctCluster{Cluster: c, ac: ac, bridge: br, gw: gw}
	t.Cleanup(func() {
		ctx := context.Background()
		if cs, err := ac.ContainerList(ctx); err == nil {
			for _, ct := range cs {
				if err := ac.ContainerTerminate(ctx, client.RefOf(ct.ID)); err != nil {
					t.Errorf("cleanup: terminate %d: %v", ct.ID, err)
				}
			}
		}
		ac.JSON(ctx, "bridge.delete", map[string]string{"name": br}, nil)
		ac.Close()
		exec.Command("ip", "link", "del", br).Run()
		// The node keeps its forwards in a table of its own (zos_BRIDGE).
		exec.Command("nft", "delete", "table", "ip", "zos_"+br).Run()
		exec.Command("sh", "-c", "rmdir /sys/fs/cgroup/*/zos_"+br+" /sys/fs/cgroup/unified/zos_"+br+" 2>/dev/null").Run()
	})
	return ctc
}

// pushRoot builds an flist of dir and pushes it to the node's hub.
func (c *ctCluster) pushRoot(t *testing.T, dir, name string) {
	t.Helper()
	if out, err := c.CLI(0, "flist", "create", dir, "-o", filepath.Join(t.TempDir(), "x.flist"), "--push", name); err != nil {
		t.Fatalf("flist create: %v\n%s", err, out)
	}
}

func (c *ctCluster) exec(t *testing.T, ref string, args ...string) string {
	t.Helper()
	out, err := c.CLI(0, append([]string{"container", "exec", "n1", ref, "--"}, args...)...)
	if err != nil {
		t.Fatalf("container exec %s %v: %v\n%s", ref, args, err, out)
	}
	return out
}

func mountsOf(substr string) int {
	b, _ := os.ReadFile("/proc/mounts")
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// TestContainerFromFlist is issue 14's user story on a real node: a
// Debian flist on the hub, containers made with the CLI, looked into with
// corex.dispatch, a port forward, a memory limit, and terminate leaving
// the host clean.
func TestContainerFromFlist(t *testing.T) {
	root := debianRoot(t)
	c := startContainerNode(t)
	c.pushRoot(t, root, "ct/debian")
	ctx := context.Background()

	// The HTTP server is the host's static busybox, bind-mounted in.
	id, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/debian", Name: "web", Hostname: "webhost",
		Port: map[string]portNumber{"18080": 80}, Tags: []string{"t1"}, Env: map[string]string{"GREETING": "hi"},
		Mount:   map[string]string{"/usr/bin/busybox": "/bin/busybox"},
		Command: []string{"/bin/sh", "-c", "mkdir -p /srv && echo served-by-$HOSTNAME > /srv/index.html && exec /bin/busybox httpd -f -p 80 -h /srv"}})
	if err != nil || id == 0 {
		t.Fatalf("corex.create: %d %v", id, err)
	}
	out, err := c.CLI(0, "container", "create", "n1", "ct/debian", "--name", "other", "--memory", "64M", "--", "sleep", "infinity")
	if err != nil {
		t.Fatalf("zos container create: %v\n%s", err, out)
	}

	// Inside: own hostname, PID namespace, veth address, the flist's OS.
	got := c.exec(t, "web", "sh", "-c", "hostname; cat /etc/os-release; ip addr; ps -e -o pid,comm")
	web, err := c.ac.ContainerGet(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"webhost\n", "Debian GNU/Linux 12", "inet " + web.IP + "/24", "eth0"} {
		if !strings.Contains(got, want) {
			t.Errorf("inside web: no %q in\n%s", want, got)
		}
	}
	if !strings.Contains(got, "\n      1 sh\n") && !strings.Contains(got, "\n      1 busybox\n") {
		t.Errorf("PID 1 is not the container's process:\n%s", got)
	}
	if web.Flist != "ct/debian" || web.Status != "running" {
		t.Errorf("corex.get: %+v", web)
	}

	// Writable layers are the container's own.
	c.exec(t, "web", "sh", "-c", "echo mine > /root/only-web")
	if out, err := c.CLI(0, "container", "exec", "n1", "other", "--", "cat", "/root/only-web"); err == nil {
		t.Fatalf("other container sees web's file: %s", out)
	}

	// The forward serves the host (curl, to the node's address and to
	// 127.0.0.1) and the other container (to the bridge address).
	testcluster.Eventually(t, 60*time.Second, func() error {
		for _, host := range []string{"127.0.0.1", c.gw} {
			b, err := exec.Command("curl", "-s", "--max-time", "5", "http://"+host+":18080/").Output()
			if err != nil || string(b) != "served-by-webhost\n" {
				return fmt.Errorf("curl %s: %q %v", host, b, err)
			}
		}
		return nil
	})
	got = c.exec(t, "other", "bash", "-c", "exec 3<>/dev/tcp/"+c.gw+"/18080; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
	if !strings.Contains(got, "served-by-webhost") {
		t.Errorf("from the other container: %s", got)
	}
	if cs, err := c.ac.ContainerList(ctx, "t1"); err != nil || len(cs) != 1 || cs[0].Name != "web" {
		t.Errorf("corex.find t1: %v %v", cs, err)
	}

	// Memory: a process over 64M in "other" is killed.
	out, err = c.CLI(0, "container", "exec", "n1", "other", "--", "perl", "-e", `$x = "a" x (256*1024*1024); print "survived\n"`)
	if err == nil || strings.Contains(out, "survived") {
		t.Errorf("256M allocation under a 64M limit survived: %v\n%s", err, out)
	}

	// Logs.
	c.exec(t, "web", "true")
	if out, err := c.CLI(0, "container", "list", "n1"); err != nil || !strings.Contains(out, "web") || !strings.Contains(out, "ct/debian") {
		t.Errorf("container list: %v\n%s", err, out)
	}

	// Terminate leaves nothing behind.
	other, _ := c.ac.ContainerGet(ctx, "other")
	if out, err := c.CLI(0, "container", "rm", "n1", "web", "other"); err != nil {
		t.Fatalf("container rm: %v\n%s", err, out)
	}
	checkClean(t, c, []*corex.Info{web, other})
}

type portNumber = container.PortNumber

// checkClean: no mount, link, nft rule or cgroup of the containers is left.
func checkClean(t *testing.T, c *ctCluster, cs []*corex.Info) {
	t.Helper()
	testcluster.Eventually(t, 30*time.Second, func() error {
		if n := mountsOf(filepath.Join(c.Nodes[0].Dir, "corex")); n != 0 {
			return fmt.Errorf("%d mounts left under the node's corex dir", n)
		}
		return nil
	})
	links, _ := exec.Command("ip", "-o", "link").Output()
	nft, _ := exec.Command("nft", "list", "ruleset").Output()
	for _, ct := range cs {
		if ct == nil {
			continue
		}
		if strings.Contains(string(nft), ct.IP+" ") || strings.Contains(string(nft), ct.IP+":") {
			t.Errorf("nft rule for %s left:\n%s", ct.IP, nft)
		}
		// Gone, or a zombie waiting for the host's init to reap it.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ct.Pid)); err == nil {
			if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] != "Z" {
				t.Errorf("process %d of %s left: %s", ct.Pid, ct.Name, b)
			}
		}
	}
	// Only this node's: other tests on the host run containers too.
	if strings.Contains(string(links), "master "+c.bridge+" ") {
		t.Errorf("veth left on %s:\n%s", c.bridge, links)
	}
	if out, _ := exec.Command("sh", "-c", "find /sys/fs/cgroup -maxdepth 3 -path '*/zos_"+c.bridge+"/zos-*'").Output(); len(out) > 0 {
		t.Errorf("cgroups left:\n%s", out)
	}
}

// TestContainerBadInput: every bad create is a clear ERROR with code 400
// and leaves nothing behind.
func TestContainerBadInput(t *testing.T) {
	c := startContainerNode(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	if err := exec.Command("cp", "/usr/bin/busybox", filepath.Join(src, "bin/busybox")).Run(); err != nil {
		t.Fatal(err)
	}
	os.Symlink("busybox", filepath.Join(src, "bin/sh"))
	os.Symlink("busybox", filepath.Join(src, "bin/sleep"))
	c.pushRoot(t, src, "ct/bb")
	ctx := context.Background()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("this is not an flist, just some bytes that pretend to be one"))
	}))
	defer bad.Close()
	sleep := []string{"sleep", "1000"}
	if _, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/bb", Name: "taken", Port: map[string]portNumber{"18090": 80}, Command: sleep}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args string
		want string
	}{
		{"missing flist", `{"root":"ct/nope","command":["sleep","1"]}`, "no flist"},
		{"corrupt flist", `{"root":"` + bad.URL + `/ct/bad.flist","command":["sleep","1"]}`, "corrupt"},
		{"name taken", `{"root":"ct/bb","name":"taken","command":["sleep","1"]}`, "name already taken"},
		{"port forwarded", `{"root":"ct/bb","port":{"18090":80},"command":["sleep","1"]}`, "already forwarded"},
		{"bad cidr", `{"root":"ct/bb","nics":[{"type":"bridge","id":"zt` + randHex(3) + `","config":{"cidr":"10.1.2.300/24"}}],"command":["sleep","1"]}`, "cidr"},
		{"memory -1", `{"root":"ct/bb","cgroups":{"memory":"-1"},"command":["sleep","1"]}`, "invalid size"},
		{"no root", `{"command":["sleep","1"]}`, "root"},
	}
	for _, tc := range cases {
		r, err := c.ac.Run(ctx, agent.Command{Command: "corex.create", Arguments: []byte(tc.args)}, 2*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.State != agent.StateError || r.Code != 400 || !strings.Contains(r.Data, tc.want) {
			t.Errorf("%s: %s %d %q (want ERROR 400 with %q)", tc.name, r.State, r.Code, r.Data, tc.want)
		}
	}
	// Nothing half-created: one container, one flist mount, one veth.
	cs, err := c.ac.ContainerList(ctx)
	if err != nil || len(cs) != 1 {
		t.Fatalf("containers after bad creates: %v %v", cs, err)
	}
	if n := mountsOf("zos-flist:"); n != 1 {
		t.Errorf("%d flist mounts, want 1", n)
	}
	links, _ := exec.Command("ip", "-o", "link").Output()
	if n := strings.Count(string(links), "zv"); n != 1 {
		t.Errorf("%d veths, want 1:\n%s", n, links)
	}
	if err := c.ac.ContainerTerminate(ctx, "taken"); err != nil {
		t.Fatal(err)
	}
	if err := c.ac.ContainerTerminate(ctx, "taken"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("terminate twice: %v", err)
	}
	checkClean(t, c, cs)
}

// TestContainersShareFlist: 20 containers of one flist use one FUSE mount
// (and so one cache); it goes with the last of them.
func TestContainersShareFlist(t *testing.T) {
	c := startContainerNode(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	exec.Command("cp", "/usr/bin/busybox", filepath.Join(src, "bin/busybox")).Run()
	for _, l := range []string{"sh", "sleep", "cat"} {
		os.Symlink("busybox", filepath.Join(src, "bin", l))
	}
	os.WriteFile(filepath.Join(src, "hello"), []byte("shared\n"), 0o644)
	c.pushRoot(t, src, "ct/share")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ac.ContainerCreate(ctx, corex.CreateArgs{Root: "ct/share", Name: fmt.Sprintf("s%d", i), Command: []string{"sleep", "1000"}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := mountsOf("zos-flist:ct/share"); n != 1 {
		t.Errorf("%d FUSE mounts of ct/share for 20 containers, want 1", n)
	}
	for _, ref := range []string{"s0", "s19"} {
		if out := c.exec(t, ref, "cat", "/hello"); out != "shared\n" {
			t.Errorf("%s reads %q", ref, out)
		}
	}
	cs, _ := c.ac.ContainerList(ctx)
	// All but the last at once (each waits out its stop timeout: sleep as
	// PID 1 ignores SIGTERM); the mount stays for the last one.
	var twg sync.WaitGroup
	for _, ct := range cs[:len(cs)-1] {
		twg.Add(1)
		go func() {
			defer twg.Done()
			if err := c.ac.ContainerTerminate(ctx, client.RefOf(ct.ID)); err != nil {
				t.Error(err)
			}
		}()
	}
	twg.Wait()
	if n := mountsOf("zos-flist:ct/share"); n != 1 {
		t.Fatalf("%d mounts of ct/share with one container left, want 1", n)
	}
	if err := c.ac.ContainerTerminate(ctx, client.RefOf(cs[len(cs)-1].ID)); err != nil {
		t.Fatal(err)
	}
	if n := mountsOf("zos-flist:ct/share"); n != 0 {
		t.Errorf("flist still mounted after its last container: %d", n)
	}
	checkClean(t, c, cs)
}
