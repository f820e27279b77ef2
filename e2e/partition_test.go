package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator/client"
)

// netLab is a bridge in its own network namespace with one namespace per
// host plugged into it, plus a leg into the test's own namespace so the
// test reaches every host while the links are up.
type netLab struct {
	t      *testing.T
	tag    string
	subnet string // "10.77.X."
	cacert string // the cluster CA, for curl ("" without TLS)
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newNetLab(t *testing.T, hosts int) *netLab {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the partition test needs iproute2 (scripts/deps.sh test installs it)")
	}
	x := 1 + rand.IntN(250)
	l := &netLab{t: t, tag: fmt.Sprintf("z%d", x), subnet: fmt.Sprintf("10.77.%d.", x)}
	t.Cleanup(l.destroy)
	br := l.tag + "br"
	sh(t, "ip", "netns", "add", br)
	sh(t, "ip", "-n", br, "link", "add", "br0", "type", "bridge")
	sh(t, "ip", "-n", br, "link", "set", "br0", "up")
	for i := 1; i <= hosts; i++ {
		ns := fmt.Sprintf("%sh%d", l.tag, i)
		port := fmt.Sprintf("%sp%d", l.tag, i)
		sh(t, "ip", "netns", "add", ns)
		sh(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "link", "set", port, "netns", br)
		sh(t, "ip", "-n", br, "link", "set", port, "master", "br0", "up")
		sh(t, "ip", "-n", ns, "addr", "add", l.subnet+fmt.Sprint(i)+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	// The test's own leg.
	sh(t, "ip", "link", "add", l.tag+"t", "type", "veth", "peer", "name", l.tag+"tp", "netns", br)
	sh(t, "ip", "-n", br, "link", "set", l.tag+"tp", "master", "br0", "up")
	sh(t, "ip", "addr", "add", l.subnet+"254/24", "dev", l.tag+"t")
	sh(t, "ip", "link", "set", l.tag+"t", "up")
	return l
}

func (l *netLab) ns(i int) string { return fmt.Sprintf("%sh%d", l.tag, i) }

// cut takes host i's port on the bridge down (or up again).
func (l *netLab) cut(i int, down bool) {
	state := "up"
	if down {
		state = "down"
	}
	sh(l.t, "ip", "-n", l.tag+"br", "link", "set", fmt.Sprintf("%sp%d", l.tag, i), state)
}

func (l *netLab) destroy() {
	exec.Command("ip", "link", "del", l.tag+"t").Run()
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, l.tag) {
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// nsCurl runs curl inside host i's namespace and returns the HTTP status.
func (l *netLab) nsCurl(i int, timeout time.Duration, method, url, token, body string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	args := []string{"netns", "exec", l.ns(i), "curl", "-s", "-m", fmt.Sprint(int(timeout.Seconds())),
		"-o", "/dev/stderr", "-w", "%{http_code}", "-X", method, "-H", "Authorization: Bearer " + token, "--data-binary", body}
	if l.cacert != "" {
		args = append(args, "--cacert", l.cacert)
	}
	out, _ := exec.CommandContext(ctx, "ip", append(args, url)...).CombinedOutput()
	s := string(out)
	if len(s) < 3 {
		return 0, s
	}
	var code int
	fmt.Sscanf(s[len(s)-3:], "%d", &code)
	return code, s[:len(s)-3]
}

// TestPartition cuts the leader off from the two other nodes: the isolated
// side refuses writes, the majority elects a leader and keeps writing, and
// after healing the isolated node converges.
func TestPartition(t *testing.T) {
	lab := newNetLab(t, 3)
	c := testcluster.Start(t, 3, testcluster.Options{
		Args: []string{"--raft-heartbeat", "500ms", "--raft-election", "500ms"},
		Wrap: func(i int) ([]string, string) {
			return []string{"ip", "netns", "exec", lab.ns(i + 1)}, lab.subnet + fmt.Sprint(i+1)
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := kvPut(ctx, c.Client(0), "before"); err != nil {
		t.Fatal(err)
	}
	cs, err := status(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	lone := int(cs.LeaderID[1] - '0') // 1-based host number
	t.Logf("isolating the leader %s", cs.LeaderID)
	lab.cut(lone, true)

	// The isolated node cannot commit: its write fails with a clear error.
	lab.cacert = c.CAFile()
	code, body := lab.nsCurl(lone, 40*time.Second, "PUT", fmt.Sprintf("%s://%s%d:5000/api/v1/kv/load/minority", c.Scheme(), lab.subnet, lone), c.Token, "x")
	if code != 503 && code != 504 {
		t.Fatalf("write on the isolated node: HTTP %d %s", code, body)
	}
	t.Logf("isolated node refused the write: %d %s", code, strings.TrimSpace(body))

	// The majority elects a leader and keeps going.
	maj := lone % 3 // 0-based index of a majority node
	testcluster.Eventually(t, 60*time.Second, func() error {
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		return kvPut(wctx, c.Client(maj), "majority")
	})
	for i := 0; i < 20; i++ {
		if err := kvPut(ctx, c.Client(maj), fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cs, err = status(t, c, maj)
	if err != nil {
		t.Fatal(err)
	}
	if cs.LeaderID == fmt.Sprintf("n%d", lone) || cs.LeaderID == "" {
		t.Fatalf("majority has no new leader: %+v", cs)
	}

	// Heal: the isolated node converges on the majority's history and the
	// write it was refused never appears.
	lab.cut(lone, false)
	testcluster.Eventually(t, 60*time.Second, func() error {
		var e struct {
			Key string `json:"key"`
		}
		gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
		defer gcancel()
		return c.Get(gctx, lone-1, "/api/v1/kv/load/m19?stale=true", &e)
	})
	gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
	defer gcancel()
	err = c.Get(gctx, lone-1, "/api/v1/kv/load/minority", nil)
	if !client.IsCode(err, "not_found") {
		t.Fatalf("the refused minority write: %v", err)
	}
}
