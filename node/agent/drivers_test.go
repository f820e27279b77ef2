package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zosproject/zos/node/agent"
)

// driver is a stock Redis client speaking 0-core's protocol: go-redis in
// this process, or redis-cli run once per command.
type driver interface {
	do(t *testing.T, args ...string) string // one command, its reply as text
}

type goRedis struct{ c *redis.Client }

func (g goRedis) do(t *testing.T, args ...string) string {
	a := make([]any, len(args))
	for i, s := range args {
		a[i] = s
	}
	v, err := g.c.Do(context.Background(), a...).Result()
	if err == redis.Nil {
		return ""
	}
	if err != nil {
		return err.Error()
	}
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return fmt.Sprint(v)
	case []any:
		var parts []string
		for _, x := range v {
			parts = append(parts, fmt.Sprint(x))
		}
		return strings.Join(parts, "\n")
	}
	return fmt.Sprint(v)
}

type redisCLI struct{ host, port, token string }

func (r redisCLI) do(t *testing.T, args ...string) string {
	base := []string{"-h", r.host, "-p", r.port, "--no-auth-warning", "--raw"}
	if r.token != "" {
		base = append(base, "-a", r.token)
	}
	out, err := exec.Command("redis-cli", append(base, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return strings.TrimSuffix(string(out), "\n")
}

func drivers(t *testing.T, e *env) map[string]func(token string) driver {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli missing: scripts/deps.sh test installs redis-tools")
	}
	host, port, _ := net.SplitHostPort(e.addr)
	return map[string]func(string) driver{
		"go-redis": func(tok string) driver {
			c := redis.NewClient(&redis.Options{Addr: e.addr, Password: tok, Protocol: 2, ReadTimeout: -1, DisableIdentity: true})
			t.Cleanup(func() { c.Close() })
			return goRedis{c}
		},
		"redis-cli": func(tok string) driver { return redisCLI{host, port, tok} },
	}
}

func push(t *testing.T, d driver, cmd map[string]any) string {
	t.Helper()
	if cmd["id"] == nil {
		cmd["id"] = newID(t)
	}
	b, _ := json.Marshal(cmd)
	if got := d.do(t, "RPUSH", "core:default", string(b)); strings.Contains(got, "ERR") {
		t.Fatalf("RPUSH: %s", got)
	}
	return cmd["id"].(string)
}

func await(t *testing.T, d driver, id string) agent.JobResult {
	t.Helper()
	v := d.do(t, "BRPOPLPUSH", "result:"+id, "result:"+id, "60")
	var r agent.JobResult
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		t.Fatalf("result of %s: %v: %q", id, err, v)
	}
	return r
}

// TestProtocolWithStockClients runs 0-core's scenarios with go-redis and
// with redis-cli.
func TestProtocolWithStockClients(t *testing.T) {
	e := start(t)
	for name, mk := range drivers(t, e) {
		t.Run(name, func(t *testing.T) {
			d := mk(token)
			t.Run("auth", func(t *testing.T) {
				anon := mk("")
				if got := anon.do(t, "PING"); got != "PONG" {
					t.Fatalf("PING = %q", got)
				}
				if got := anon.do(t, "RPUSH", "core:default", "{}"); !strings.Contains(got, "NOAUTH") {
					t.Fatalf("RPUSH without AUTH = %q", got)
				}
				if got := mk("wrong").do(t, "LLEN", "core:default"); !strings.Contains(got, "WRONGPASS") && !strings.Contains(got, "AUTH failed") {
					t.Fatalf("wrong token = %q", got)
				}
				if got := d.do(t, "SELECT", "0"); got != "OK" {
					t.Fatalf("SELECT 0 = %q", got)
				}
			})
			t.Run("ping", func(t *testing.T) {
				if r := await(t, d, push(t, d, map[string]any{"command": "core.ping"})); r.State != agent.StateSuccess || r.Data != `"PONG"` {
					t.Fatalf("%+v", r)
				}
			})
			t.Run("stream", func(t *testing.T) {
				id := push(t, d, map[string]any{"command": "core.system", "stream": true,
					"arguments": map[string]any{"name": "sh", "args": []string{"-c", "echo one; sleep 0.3; echo two"}}})
				// The first line is on the stream before the job ends.
				first := d.do(t, "BLPOP", "stream:"+id, "60")
				if !strings.Contains(first, `"message":"one"`) {
					t.Fatalf("first stream element = %q", first)
				}
				if ttl := d.do(t, "TTL", "result:"+id+":flag"); ttl != "-1" {
					t.Logf("job already over when its first line was read (flag ttl %s)", ttl)
				}
				r := await(t, d, id)
				if r.State != agent.StateSuccess || r.Streams[0] != "one\ntwo\n" {
					t.Fatalf("%+v", r)
				}
				if rest := d.do(t, "LRANGE", "stream:"+id, "0", "-1"); !strings.Contains(rest, `"message":"two"`) {
					t.Fatalf("rest of the stream = %q", rest)
				}
			})
			t.Run("timeout", func(t *testing.T) {
				id := push(t, d, map[string]any{"command": "bash", "max_time": 1, "arguments": map[string]any{"script": "sleep 300 & echo $$; wait"}})
				r := await(t, d, id)
				if r.State != agent.StateTimeout {
					t.Fatalf("%+v", r)
				}
				var pgid int
				fmt.Sscan(r.Streams[0], &pgid)
				if pgid == 0 {
					t.Fatalf("no pid in %q", r.Streams[0])
				}
				waitFor(t, func() bool { return groupAlive(pgid) == 0 })
			})
			t.Run("duplicate", func(t *testing.T) {
				id := push(t, d, map[string]any{"command": "core.ping"})
				await(t, d, id)
				push(t, d, map[string]any{"id": id, "command": "core.ping"})
				waitFor(t, func() bool { return d.do(t, "LLEN", "result:"+id) == "2" })
				if all := d.do(t, "LRANGE", "result:"+id, "0", "-1"); !strings.Contains(all, agent.StateDuplicateID) {
					t.Fatalf("results = %q", all)
				}
			})
			t.Run("unknown", func(t *testing.T) {
				if r := await(t, d, push(t, d, map[string]any{"command": "core.nope"})); r.State != agent.StateUnknownCmd {
					t.Fatalf("%+v", r)
				}
			})
			t.Run("two-readers", func(t *testing.T) {
				id := push(t, d, map[string]any{"command": "bash", "arguments": map[string]any{"script": "sleep 0.3; echo x"}})
				var wg sync.WaitGroup
				got := make([]agent.JobResult, 2)
				for i := range got {
					wg.Add(1)
					go func() { defer wg.Done(); got[i] = await(t, mk(token), id) }()
				}
				wg.Wait()
				for _, r := range got {
					if r.State != agent.StateSuccess || r.Streams[0] != "x\n" {
						t.Fatalf("%+v", r)
					}
				}
			})
			t.Run("queue", func(t *testing.T) {
				f := t.TempDir() + "/order"
				var ids []string
				for i := 0; i < 3; i++ {
					ids = append(ids, push(t, d, map[string]any{"command": "bash", "queue": "q-" + name,
						"arguments": map[string]any{"script": fmt.Sprintf("echo s%d >> %s; sleep 0.1; echo e%d >> %s", i, f, i, f)}}))
				}
				for _, id := range ids {
					await(t, d, id)
				}
				b, _ := os.ReadFile(f)
				if got := strings.Join(strings.Fields(string(b)), ","); got != "s0,e0,s1,e1,s2,e2" {
					t.Fatalf("order = %s", got)
				}
			})
			t.Run("recurring", func(t *testing.T) {
				f := t.TempDir() + "/runs"
				id := push(t, d, map[string]any{"command": "bash", "recurring_period": 1, "arguments": map[string]any{"script": "echo x >> " + f}})
				runs := func() int { b, _ := os.ReadFile(f); return strings.Count(string(b), "x") }
				waitFor(t, func() bool { return runs() >= 2 })
				if r := await(t, d, push(t, d, map[string]any{"command": "job.unschedule", "arguments": map[string]any{"id": id}})); r.State != agent.StateSuccess {
					t.Fatalf("unschedule = %+v", r)
				}
				waitFor(t, func() bool { return d.do(t, "TTL", "result:"+id+":flag") != "-1" })
				n := runs()
				time.Sleep(2500 * time.Millisecond)
				if runs() != n {
					t.Fatalf("ran after job.unschedule: %d then %d", n, runs())
				}
			})
		})
	}
}

// TestStateProcessAndShutdown: core.state and process.list show a job's
// process; Close kills and reaps every job and leaves no goroutine behind.
func TestStateProcessAndShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	e := start(t)
	c := e.client(t)
	id := submit(t, c, map[string]any{"command": "core.system", "arguments": map[string]any{"name": "sleep", "args": []string{"1000"}}})
	var pid int
	waitFor(t, func() bool {
		js := e.m.Jobs()
		if len(js) == 1 && js[0].PID != 0 {
			pid = js[0].PID
			return true
		}
		return false
	})
	st := result(t, c, submit(t, c, map[string]any{"command": "core.state"}))
	var state struct {
		agent.ProcessStats
		Jobs []agent.JobInfo `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(st.Data), &state); err != nil || state.PID != os.Getpid() || state.RSS == 0 {
		t.Fatalf("core.state = %s (%v)", st.Data, err)
	}
	found := false
	for _, j := range state.Jobs {
		found = found || j.Cmd.ID == id && j.PID == pid && j.RSS > 0
	}
	if !found {
		t.Fatalf("core.state jobs = %+v", state.Jobs)
	}
	pl := result(t, c, submit(t, c, map[string]any{"command": "process.list", "arguments": map[string]any{"pid": pid}}))
	if pl.State != agent.StateSuccess || !strings.Contains(pl.Data, `"cmdline":["sleep","1000"]`) {
		t.Fatalf("process.list = %+v", pl)
	}
	if r := result(t, c, submit(t, c, map[string]any{"command": "process.kill", "arguments": map[string]any{"pid": 1}})); r.State != agent.StateError || r.Code != 400 {
		t.Fatalf("process.kill 1 = %+v", r)
	}
	// A second long job, then shut the manager down with both running.
	submit(t, c, map[string]any{"command": "bash", "arguments": map[string]any{"script": "sleep 1000"}})
	waitFor(t, func() bool { return len(e.m.Jobs()) == 2 })
	c.Close()
	e.stop()
	if groupAlive(pid) != 0 {
		t.Fatal("a job's process outlived the manager")
	}
	for _, j := range e.m.Jobs() {
		t.Fatalf("job %s left after shutdown", j.Cmd.ID)
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before+2 })
}

// TestShutdownWithQueuedJobs: jobs waiting on a queue are answered KILLED
// at shutdown, and Close returns.
func TestShutdownWithQueuedJobs(t *testing.T) {
	e := start(t)
	c := e.client(t)
	first := submit(t, c, map[string]any{"command": "bash", "queue": "q", "arguments": map[string]any{"script": "sleep 1000"}})
	second := submit(t, c, map[string]any{"command": "core.ping", "queue": "q"})
	waitFor(t, func() bool { return len(e.m.Jobs()) == 2 })
	stopped := make(chan struct{})
	go func() { e.m.Close(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("Close did not return with a queued job")
	}
	for _, id := range []string{first, second} {
		if r := result(t, c, id); r.State != agent.StateKilled {
			t.Fatalf("%s = %+v", id, r)
		}
	}
}

func TestKillallAndProcessKill(t *testing.T) {
	e := start(t)
	c := e.client(t)
	for i := 0; i < 2; i++ {
		submit(t, c, map[string]any{"command": "core.system", "arguments": map[string]any{"name": "sleep", "args": []string{"1000"}}})
	}
	waitFor(t, func() bool { return len(e.m.Jobs()) == 2 })
	r := result(t, c, submit(t, c, map[string]any{"command": "job.killall"}))
	if r.State != agent.StateSuccess || r.Data != "2" {
		t.Fatalf("job.killall = %+v", r)
	}
	waitFor(t, func() bool { return len(e.m.Jobs()) == 0 })

	p := exec.Command("sleep", "1000")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }()
	r = result(t, c, submit(t, c, map[string]any{"command": "process.kill", "arguments": map[string]any{"pid": p.Process.Pid, "signal": 9}}))
	if r.State != agent.StateSuccess {
		t.Fatalf("process.kill = %+v", r)
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		p.Process.Kill()
		t.Fatal("process.kill did not kill the process")
	}
	if r := result(t, c, submit(t, c, map[string]any{"command": "process.kill", "arguments": map[string]any{"pid": 12, "signal": 99}})); r.State != agent.StateError || r.Code != 400 {
		t.Fatalf("signal 99 = %+v", r)
	}
}

// pyClient is 0-core's Python client's way of running a job, with
// redis-py: RPUSH, LKEYEXISTS/LTTL on the flag, BLPOP on the stream until
// the EOF flag, BRPOPLPUSH on the result.
const pyClient = `
import json, sys, redis
host, port, token, jid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
r = redis.Redis(host=host, port=port, password=token)
r.rpush('core:default', json.dumps({'id': jid, 'command': 'core.system', 'stream': True,
    'arguments': {'name': 'sh', 'args': ['-c', 'echo py-out; echo py-err >&2'], 'dir': '', 'stdin': '', 'env': None},
    'queue': None, 'max_time': None, 'max_restart': 0, 'recurring_period': 0, 'stats_interval': 0, 'tags': None}))
flag = 'result:%s:flag' % jid
lines = []
while True:
    data = r.blpop('stream:%s' % jid, 10)
    if data is None:
        if not (r.execute_command('LKEYEXISTS', flag) and r.execute_command('LTTL', flag) == -1):
            break
        continue
    m = json.loads(data[1].decode())['message']
    if m['meta'] & 0x6:
        break
    lines.append('%d:%s' % (m['meta'] >> 16, m['message']))
res = json.loads(r.brpoplpush('result:%s' % jid, 'result:%s' % jid, 10).decode())
print(json.dumps({'lines': lines, 'state': res['state'], 'streams': res['streams']}))
`

func TestRedisPy(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import redis").Run(); err != nil {
		t.Fatal("redis-py missing: scripts/deps.sh test installs python3-redis")
	}
	e := start(t)
	host, port, _ := net.SplitHostPort(e.addr)
	out, err := exec.Command(py, "-c", pyClient, host, port, token, newID(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var got struct {
		Lines   []string  `json:"lines"`
		State   string    `json:"state"`
		Streams [2]string `json:"streams"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.State != agent.StateSuccess || got.Streams[0] != "py-out\n" || got.Streams[1] != "py-err\n" ||
		!strings.Contains(strings.Join(got.Lines, "|"), "1:py-out") || !strings.Contains(strings.Join(got.Lines, "|"), "2:py-err") {
		t.Fatalf("redis-py run = %+v", got)
	}
}
