package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/resp"
)

// via is how commands reach the agent: "go-redis" or "redis-cli".
var via = "go-redis"

var addr string

func run(t *testing.T, _ *resp.Keyspace, cmd string, args any) agent.JobResult {
	t.Helper()
	id := fmt.Sprintf("br-%d-%d", os.Getpid(), rand.Int64())
	b, _ := json.Marshal(map[string]any{"id": id, "command": cmd, "arguments": args})
	var v string
	if via == "redis-cli" {
		host, port, _ := net.SplitHostPort(addr)
		cli := func(a ...string) string {
			out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port, "-a", token, "--no-auth-warning", "--raw"}, a...)...).Output()
			if err != nil {
				t.Fatalf("redis-cli %v: %v", a, err)
			}
			return strings.TrimSpace(string(out))
		}
		cli("RPUSH", agent.DefaultQueue, string(b))
		v = cli("BRPOPLPUSH", "result:"+id, "result:"+id, "60")
	} else {
		c := redis.NewClient(&redis.Options{Addr: addr, Password: token, Protocol: 2, ReadTimeout: -1, DisableIdentity: true})
		defer c.Close()
		ctx := context.Background()
		c.RPush(ctx, agent.DefaultQueue, b)
		var err error
		if v, err = c.Do(ctx, "BRPOPLPUSH", "result:"+id, "result:"+id, 60).Text(); err != nil {
			t.Fatalf("%s: no result (%v)", cmd, err)
		}
	}
	var r agent.JobResult
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		t.Fatalf("%s: %v: %q", cmd, err, v)
	}
	return r
}

const token = "bridge-test"

func sh(t *testing.T, name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return string(out)
}

func TestBridge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("bridge tests need root")
	}
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq missing: scripts/deps.sh test installs dnsmasq-base")
	}
	ks := resp.NewKeyspace(resp.KeyspaceConfig{})
	defer ks.Close()
	m, _ := agent.New(agent.Config{Keyspace: ks})
	brs := bridge.Register(m, bridge.Config{RunDir: t.TempDir()})
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	defer func() { m.Close(); <-done; brs.Close() }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := resp.New(resp.Config{Auth: func(tok string) bool { return tok == token }, Handlers: resp.ListHandlers(ks)})
	go srv.Serve(context.Background(), ln)
	defer srv.Close()
	addr = ln.Addr().String()

	for i, mode := range []string{"static", "dnsmasq"} {
		via = []string{"redis-cli", "go-redis"}[i]
		name := fmt.Sprintf("zt%x", rand.Uint32())
		net3 := 100 + rand.IntN(150)
		cidr := fmt.Sprintf("10.213.%d.1/24", net3)
		t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
		r := run(t, ks, "bridge.create", map[string]any{"name": name, "hwaddr": fmt.Sprintf("02:00:00:00:00:%02x", i+1),
			"network": map[string]any{"mode": mode, "nat": true, "settings": map[string]any{"cidr": cidr}}})
		if r.State != agent.StateSuccess {
			t.Fatalf("bridge.create %s = %+v", mode, r)
		}
		link := sh(t, "ip", "-d", "link", "show", name)
		if !strings.Contains(link, "bridge") || !strings.Contains(link, fmt.Sprintf("02:00:00:00:00:%02x", i+1)) {
			t.Fatalf("ip link show %s:\n%s", name, link)
		}
		if addr := sh(t, "ip", "addr", "show", name); !strings.Contains(addr, cidr) {
			t.Fatalf("ip addr show %s:\n%s", name, addr)
		}
		if nft := sh(t, "nft", "list", "table", "ip", "zos"); !strings.Contains(nft, "masquerade") || !strings.Contains(nft, fmt.Sprintf("10.213.%d.0/24", net3)) {
			t.Fatalf("nft list table ip zos:\n%s", nft)
		}
		l := run(t, ks, "bridge.list", nil)
		var infos []bridge.Info
		json.Unmarshal([]byte(l.Data), &infos)
		found := false
		for _, inf := range infos {
			if inf.Name == name {
				found = inf.Managed && inf.NAT && inf.DHCP == (mode == "dnsmasq")
			}
		}
		if !found {
			t.Fatalf("bridge.list = %s", l.Data)
		}
		if mode == "dnsmasq" && !strings.Contains(sh(t, "ps", "-eo", "args"), "--interface="+name) {
			t.Fatal("dnsmasq is not running for the bridge")
		}
		if r := run(t, ks, "bridge.delete", map[string]any{"name": name}); r.State != agent.StateSuccess {
			t.Fatalf("bridge.delete = %+v", r)
		}
		if out := sh(t, "ip", "link", "show", name); !strings.Contains(out, "does not exist") {
			t.Fatalf("bridge still there: %s", out)
		}
		// The rule goes; the table goes with its last rule, unless
		// another owner (the container runtime's port forwards, on a
		// machine that runs containers) keeps chains of its own in it.
		if out := sh(t, "nft", "list", "table", "ip", "zos"); strings.Contains(out, fmt.Sprintf("10.213.%d.0/24", net3)) ||
			!strings.Contains(out, "No such file") && !strings.Contains(out, "chain prerouting") {
			t.Fatalf("NAT rule or table left after delete:\n%s", out)
		}
		if deadline := time.Now().Add(30 * time.Second); mode == "dnsmasq" {
			for strings.Contains(sh(t, "ps", "-eo", "args"), "--interface="+name) {
				if time.Now().After(deadline) {
					t.Fatal("dnsmasq still running after delete")
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	// Bad input and foreign bridges.
	for _, args := range []map[string]any{
		{"name": "this-name-is-too-long"},
		{"name": "ok", "network": map[string]any{"mode": "weird"}},
		{"name": "ok", "network": map[string]any{"mode": "static", "settings": map[string]any{"cidr": "nope"}}},
		{"name": "ok", "network": map[string]any{"mode": "none", "nat": true}},
		{"name": "ok", "hwaddr": "zz"},
		{"name": 5},
	} {
		if r := run(t, ks, "bridge.create", args); r.State != agent.StateError || r.Code != 400 {
			t.Errorf("bridge.create %v = %+v", args, r)
		}
	}
	if r := run(t, ks, "bridge.delete", map[string]any{"name": "lo"}); r.State != agent.StateError || !strings.Contains(r.Data, "not a bridge made by zos") {
		t.Fatalf("delete lo = %+v", r)
	}
}
