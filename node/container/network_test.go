package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/node/container/network"
)

func freePort(t testing.TB) int {
	for range 100 {
		p := 20000 + mrand.IntN(20000)
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

func httpGet(addr string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/index.html")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

// refused: a forward that is gone must not answer (nothing on the host
// listens on the port, so the dial is refused or times out).
func refused(t *testing.T, addr string) {
	t.Helper()
	if body, err := httpGet(addr); err == nil {
		t.Fatalf("%s still answers: %q", addr, body)
	}
}

func TestNetworkAndPortForward(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	hp := freePort(t)
	c, err := e.m.Create(ctx, Spec{
		Root:    busyboxRoot(t),
		Name:    "web",
		Port:    map[string]PortNumber{fmt.Sprint(hp): 80},
		Command: []string{"httpd", "-f", "-p", "80", "-h", "/srv"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(c.IP); ip == nil || !strings.HasPrefix(c.IP, strings.TrimSuffix(e.gw, "1")) {
		t.Fatalf("address %q not in the bridge's range (gateway %s)", c.IP, e.gw)
	}
	res, err := e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"ip", "-4", "addr", "show", "eth0"}})
	if err != nil || !strings.Contains(string(res.Stdout), c.IP+"/24") {
		t.Fatalf("ip addr in container: %v %s", err, res.Stdout)
	}
	res, err = e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"ip", "route"}})
	if err != nil || !strings.Contains(string(res.Stdout), "default via "+e.gw) {
		t.Fatalf("routes in container: %v %s", err, res.Stdout)
	}
	res, err = e.m.Exec(ctx, c.ID, ExecSpec{Args: []string{"ping", "-c", "1", "-W", "10", e.gw}})
	if err != nil || res.Code != 0 {
		t.Fatalf("ping bridge: %v %+v", err, res)
	}
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", hp), fmt.Sprintf("%s:%d", e.gw, hp)} {
		eventually(t, "GET "+addr, func() error {
			body, err := httpGet(addr)
			if err == nil && body != "hello from zos\n" {
				err = fmt.Errorf("body %q", body)
			}
			return err
		})
	}

	// A second container reaches the first through the forward too.
	c2, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	// (busybox wget segfaults on this Debian build; nc speaks HTTP/1.0 fine.)
	eventually(t, "GET from another container", func() error {
		res, err := e.m.Exec(ctx, c2.ID, ExecSpec{Args: []string{"sh", "-c",
			fmt.Sprintf(`printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 %s %d`, e.gw, hp)}})
		if err == nil && !strings.Contains(string(res.Stdout), "hello from zos\n") {
			err = fmt.Errorf("code %d out %q err %q", res.Code, res.Stdout, res.Stderr)
		}
		return err
	})

	// Conflicts.
	if err := e.m.PortForwardAdd(ctx, c2.ID, fmt.Sprint(hp), 80); !errors.Is(err, ErrPortForwarded) {
		t.Fatalf("second forward of %d: %v", hp, err)
	}
	if err := e.m.PortForwardAdd(ctx, c2.ID, fmt.Sprintf("127.0.0.1:%d|tcp+udp", hp), 80); !errors.Is(err, ErrPortForwarded) {
		t.Fatalf("overlapping forward: %v", err)
	}
	if _, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Port: map[string]PortNumber{fmt.Sprint(hp): 80}, Command: []string{"true"}}); !errors.Is(err, ErrPortForwarded) {
		t.Fatalf("create with a forwarded port: %v", err)
	}

	// Remove at runtime: stops working; add another one on the bridge address only.
	if err := e.m.PortForwardRemove(ctx, c.ID, fmt.Sprint(hp)); err != nil {
		t.Fatal(err)
	}
	refused(t, fmt.Sprintf("127.0.0.1:%d", hp))
	refused(t, fmt.Sprintf("%s:%d", e.gw, hp))
	hp2 := freePort(t)
	if err := e.m.PortForwardAdd(ctx, c.ID, fmt.Sprintf("%s:%d|tcp", e.gw, hp2), 80); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GET after add", func() error { _, err := httpGet(fmt.Sprintf("%s:%d", e.gw, hp2)); return err })
	refused(t, fmt.Sprintf("127.0.0.1:%d", hp2))
	got, _ := e.m.Get(ctx, c.ID)
	if len(got.Ports) != 1 || got.Ports[fmt.Sprintf("%s:%d|tcp", e.gw, hp2)] != 80 {
		t.Fatalf("ports %v", got.Ports)
	}
}

// leftovers lists what of a terminated container is still on the host.
func leftovers(t *testing.T, e *env, m *Manager, r *record) []string {
	t.Helper()
	var left []string
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), r.dir) {
		left = append(left, "mount under "+r.dir)
	}
	if r.Veth != "" && network.LinkExists(r.Veth) {
		left = append(left, "veth "+r.Veth)
	}
	tags, err := m.nat.Tags()
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range tags {
		if strings.Contains(tg, r.Tag) {
			left = append(left, "nft rule "+tg)
		}
	}
	for _, p := range cgroupDirs(r.Cgroup) {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "cgroup "+p)
		}
	}
	if _, err := os.Stat(r.dir); err == nil {
		left = append(left, "state dir "+r.dir)
	}
	if _, err := m.runc.state(context.Background(), r.RuncID); !errors.Is(err, errNoState) {
		left = append(left, fmt.Sprintf("runc state (%v)", err))
	}
	owners, _ := m.ipam(network.Bridge{Name: e.bridge}).Owners()
	for ip, o := range owners {
		if o == r.Tag {
			left = append(left, "address "+ip)
		}
	}
	return left
}

func recordOf(t *testing.T, m *Manager, id uint32) record {
	t.Helper()
	r, err := m.lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	return *r
}

func TestTerminateCleansEverything(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, err := e.m.Create(ctx, Spec{
		Root:    busyboxRoot(t),
		Port:    map[string]PortNumber{fmt.Sprint(freePort(t)): 80, fmt.Sprintf("%d|udp", freePort(t)): 53},
		Cgroups: Cgroups{Memory: 32 << 20, CPU: 0.5},
		Mount:   map[string]string{t.TempDir(): "/data"},
		Command: []string{"sleep", "600"},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := recordOf(t, e.m, c.ID)
	if l := leftovers(t, e, e.m, &r); len(l) < 5 {
		t.Fatalf("a running container should hold mounts, veth, rules, cgroup, state; found only %v", l)
	}
	if err := e.m.Terminate(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, e, e.m, &r); len(l) > 0 {
		t.Fatalf("terminate left: %v", l)
	}
	if _, err := e.m.Get(ctx, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after terminate: %v", err)
	}
	if err := e.m.Terminate(ctx, c.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second terminate: %v", err)
	}
}

func TestRestartRecovery(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	hp := freePort(t)
	live, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Name: "keeper", Tags: []string{"a", "b"},
		Port: map[string]PortNumber{fmt.Sprint(hp): 80}, Command: []string{"httpd", "-f", "-p", "80", "-h", "/srv"}})
	if err != nil {
		t.Fatal(err)
	}
	dead, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Name: "quitter", Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Wait(ctx, dead.ID); err != nil {
		t.Fatal(err)
	}
	deadRec := recordOf(t, e.m, dead.ID)
	e.m.Close()
	// A stray rule of a container the state dir does not know goes too.
	if err := e.m.nat.AddForward("fwd:feedfacefeed/1|tcp/tcp", network.Forward{HostPort: 1, Proto: network.TCP, To: net.ParseIP("10.0.0.1"), ToPort: 1}); err != nil {
		t.Fatal(err)
	}
	// The new manager is the agent after a restart.
	m2 := e.open()
	e.m = m2
	got, err := m2.ByName(ctx, "keeper")
	if err != nil || got.Status != StatusRunning || got.ID != live.ID || got.IP != live.IP {
		t.Fatalf("re-attached: %+v %v", got, err)
	}
	if f := m2.Find(ctx, []string{"b"}); len(f) != 1 || f[0].ID != live.ID {
		t.Fatalf("find by tag: %v", f)
	}
	if _, err := m2.ByName(ctx, "quitter"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("exited container should be cleaned up: %v", err)
	}
	if l := leftovers(t, e, m2, &deadRec); len(l) > 0 {
		t.Fatalf("cleanup of the exited container left: %v", l)
	}
	tags, _ := m2.nat.Tags()
	for _, tg := range tags {
		if strings.Contains(tg, "feedfacefeed") {
			t.Fatalf("stray rule kept: %s", tg)
		}
	}
	eventually(t, "forward after restart", func() error { _, err := httpGet(fmt.Sprintf("127.0.0.1:%d", hp)); return err })
	res, err := m2.Exec(ctx, live.ID, ExecSpec{Args: []string{"hostname"}})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "keeper" {
		t.Fatalf("exec after restart: %v %+v", err, res)
	}
	// New IDs do not reuse old ones.
	c3, err := m2.Create(ctx, Spec{Root: busyboxRoot(t), Nics: []Nic{{Type: "none"}}, Command: []string{"true"}})
	if err != nil || c3.ID <= dead.ID {
		t.Fatalf("new container after restart: %+v %v", c3, err)
	}
	r := recordOf(t, m2, live.ID)
	if err := m2.Terminate(ctx, live.ID); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, e, m2, &r); len(l) > 0 {
		t.Fatalf("terminate after restart left: %v", l)
	}
}

func TestBadInputLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	root := busyboxRoot(t)
	if _, err := e.m.Create(ctx, Spec{Root: root, Name: "dup", Command: []string{"sleep", "600"}}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		spec Spec
		want error
	}{
		{"name taken", Spec{Root: root, Name: "dup", Command: []string{"true"}}, ErrNameTaken},
		{"no root", Spec{Root: "/nonexistent/root", Command: []string{"true"}}, ErrBadSpec},
		{"no command", Spec{Root: root}, ErrBadSpec},
		{"bad mount", Spec{Root: root, Mount: map[string]string{"/nonexistent/x": "/x"}, Command: []string{"true"}}, ErrBadSpec},
		{"missing bridge", Spec{Root: root, Nics: []Nic{{Type: "bridge", ID: "ztnothere"}}, Command: []string{"true"}}, nil},
		{"missing binary", Spec{Root: root, Port: map[string]PortNumber{fmt.Sprint(freePort(t)): 80}, Command: []string{"/no/such/binary"}}, nil},
		{"bad user", Spec{Root: root, Image: &Image{Cmd: []string{"true"}, User: "nosuchuser"}}, ErrBadSpec},
	}
	for _, tc := range cases {
		_, err := e.m.Create(ctx, tc.spec)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
	}
	if n := len(e.m.List(ctx)); n != 1 {
		t.Fatalf("%d containers listed, want 1", n)
	}
	ents, _ := os.ReadDir(filepath.Join(e.cfg.Dir, "containers"))
	if len(ents) != 1 {
		t.Fatalf("container dirs left: %v", ents)
	}
	owners, _ := e.m.ipam(network.Bridge{Name: e.bridge}).Owners()
	if len(owners) != 1 {
		t.Fatalf("addresses left: %v", owners)
	}
	tags, _ := e.m.nat.Tags()
	for _, tg := range tags {
		if strings.HasPrefix(tg, "fwd:") {
			t.Fatalf("forward rule left: %s", tg)
		}
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	n := 0
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], filepath.Join(e.cfg.Dir, "containers")) {
			n++
		}
	}
	if n != 2 { // rootfs + netns of "dup"
		t.Fatalf("%d mounts under the state dir, want 2:\n%s", n, mounts)
	}
	veths := 0
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, "zv") {
			if f, err := os.ReadFile("/sys/class/net/" + i.Name + "/master/uevent"); err == nil && strings.Contains(string(f), "INTERFACE="+e.bridge) {
				veths++
			}
		}
	}
	if veths != 1 {
		t.Fatalf("%d veths on the bridge, want 1", veths)
	}
}

func TestParallelCreateTerminate(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const n = 6
	ips := make([]string, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			c, err := e.m.Create(ctx, Spec{Root: busyboxRoot(t), Name: fmt.Sprint("p", i), Tags: []string{"par"},
				Port: map[string]PortNumber{fmt.Sprint(30000 + mrand.IntN(10000)): 80}, Command: []string{"sleep", "600"}})
			if err == nil {
				ips[i] = c.IP
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil && !errors.Is(err, ErrPortForwarded) {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if ip != "" && seen[ip] {
			t.Fatalf("address %s given twice: %v", ip, ips)
		}
		seen[ip] = true
	}
	found := e.m.Find(ctx, []string{"par"})
	for _, c := range found {
		go func() { errs <- e.m.Terminate(ctx, c.ID) }()
	}
	for range found {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if owners, _ := e.m.ipam(network.Bridge{Name: e.bridge}).Owners(); len(owners) != 0 {
		t.Fatalf("addresses left: %v", owners)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.cfg.Dir, "containers")); len(ents) != 0 {
		t.Fatalf("container dirs left: %v", ents)
	}
}
