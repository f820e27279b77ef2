package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/resp"
)

const token = "test-token"

type env struct {
	addr string
	m    *agent.Manager
	ks   *resp.Keyspace
	stop func() // stops everything (once); also run at cleanup
}

// start runs a RESP server and a manager on loopback; both stop at the
// end of the test, and the test fails if a job's process outlives it.
func start(t *testing.T) *env {
	t.Helper()
	ks := resp.NewKeyspace(resp.KeyspaceConfig{})
	m, err := agent.New(agent.Config{Keyspace: ks, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := resp.New(resp.Config{Auth: func(tok string) bool { return tok == token }, Handlers: resp.ListHandlers(ks)})
	go s.Serve(context.Background(), ln)
	done := make(chan struct{})
	go func() { m.Run(context.Background()); close(done) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			m.Close()
			<-done
			s.Close()
			ks.Close()
		})
	}
	t.Cleanup(stop)
	return &env{addr: ln.Addr().String(), m: m, ks: ks, stop: stop}
}

func (e *env) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.addr, Password: token, Protocol: 2, ReadTimeout: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

var seq int

func newID(t *testing.T) string {
	seq++
	return fmt.Sprintf("%s-%d-%d", strings.ReplaceAll(t.Name(), "/", "-"), os.Getpid(), seq)
}

// submit pushes a command and returns its id.
func submit(t *testing.T, c *redis.Client, cmd map[string]any) string {
	t.Helper()
	if cmd["id"] == nil {
		cmd["id"] = newID(t)
	}
	b, _ := json.Marshal(cmd)
	if err := c.RPush(context.Background(), "core:default", b).Err(); err != nil {
		t.Fatal(err)
	}
	return cmd["id"].(string)
}

// result waits (generously) for the result of id, the way 0-core clients do.
func result(t *testing.T, c *redis.Client, id string) agent.JobResult {
	t.Helper()
	v, err := c.Do(context.Background(), "BRPOPLPUSH", "result:"+id, "result:"+id, 60).Text()
	if err != nil {
		t.Fatalf("result of %s: %v", id, err)
	}
	var r agent.JobResult
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		t.Fatalf("result of %s: %v: %s", id, err, v)
	}
	return r
}

func TestPing(t *testing.T) {
	e := start(t)
	c := e.client(t)
	id := submit(t, c, map[string]any{"command": "core.ping", "tags": []string{"a"}})
	r := result(t, c, id)
	if r.State != agent.StateSuccess || r.Data != `"PONG"` || r.Level != 20 || r.ID != id || len(r.Tags) != 1 {
		t.Fatalf("ping = %+v", r)
	}
	// The flag exists and expires now that the job is over.
	if ttl := c.TTL(context.Background(), "result:"+id+":flag").Val(); ttl <= 0 {
		t.Fatalf("flag ttl = %v", ttl)
	}
}

func TestSystemStream(t *testing.T) {
	e := start(t)
	c := e.client(t)
	id := submit(t, c, map[string]any{"command": "core.system", "stream": true,
		"arguments": map[string]any{"name": "sh", "args": []string{"-c", `echo out1; echo err1 >&2; echo '20::: {"x": 1}'; printf '%s\n' '20:::' '{"y":' '2}' ':::'; echo out2`}}})
	// The stream's lines arrive, in order, ending with the EOF flag.
	var lines []string
	for {
		v, err := c.BLPop(context.Background(), 60*time.Second, "stream:"+id).Result()
		if err != nil {
			t.Fatalf("stream: %v (got %q)", err, lines)
		}
		var sm agent.StreamMessage
		if err := json.Unmarshal([]byte(v[1]), &sm); err != nil {
			t.Fatal(err)
		}
		if sm.Message.Epoch == 0 {
			t.Fatalf("no epoch: %s", v[1])
		}
		if sm.Message.Meta&0x6 != 0 {
			if sm.Message.Meta&0x2 == 0 {
				t.Fatalf("end flag = %#x, want success", sm.Message.Meta)
			}
			break
		}
		lines = append(lines, fmt.Sprintf("%d:%s", sm.Message.Meta>>16, sm.Message.Message))
	}
	got := strings.Join(lines, "|")
	for _, want := range []string{"1:out1", "2:err1", `20:{"x": 1}`, "20:{\"y\":\n2}", "1:out2"} {
		if !strings.Contains(got, want) {
			t.Fatalf("stream %q lacks %q", got, want)
		}
	}
	if i, j := strings.Index(got, "1:out1"), strings.Index(got, "1:out2"); i > j {
		t.Fatalf("stdout out of order: %q", got)
	}
	r := result(t, c, id)
	if r.State != agent.StateSuccess || r.Code != 0 || r.Streams[0] != "out1\nout2\n" || r.Streams[1] != "err1\n" || r.Level != 20 || r.Data != "{\"y\":\n2}" {
		t.Fatalf("result = %+v", r)
	}
}

func TestExitCodeAndMissingBinary(t *testing.T) {
	e := start(t)
	c := e.client(t)
	id := submit(t, c, map[string]any{"command": "bash", "arguments": map[string]any{"script": "read x; echo got $x; exit 3", "stdin": "hi\n"}})
	if r := result(t, c, id); r.State != agent.StateError || r.Code != 3 || r.Streams[0] != "got hi\n" {
		t.Fatalf("exit 3 = %+v", r)
	}
	id = submit(t, c, map[string]any{"command": "core.system", "arguments": map[string]any{"name": "/no/such/binary-zos"}})
	if r := result(t, c, id); r.State != agent.StateError || !strings.Contains(r.Data, "no such file") {
		t.Fatalf("missing binary = %+v", r)
	}
}

// groupAlive counts live (non-zombie) processes of process group pgid.
func groupAlive(pgid int) int {
	ps, _ := agent.Processes()
	n := 0
	for _, p := range ps {
		if p.PGID == pgid && p.State != "Z" {
			n++
		}
	}
	return n
}

func TestTimeoutKillsGroup(t *testing.T) {
	e := start(t)
	c := e.client(t)
	// The shell leaves a background child in its group; both must die.
	id := submit(t, c, map[string]any{"command": "bash", "max_time": 1,
		"arguments": map[string]any{"script": "sleep 1000 & echo $$; wait"}})
	var pgid int
	waitFor(t, func() bool {
		for _, j := range e.m.Jobs() {
			if j.Cmd.ID == id && j.PID != 0 {
				pgid = j.PID
				return true
			}
		}
		return false
	})
	r := result(t, c, id)
	if r.State != agent.StateTimeout {
		t.Fatalf("timeout = %+v", r)
	}
	if strings.TrimSpace(r.Streams[0]) != strconv.Itoa(pgid) {
		t.Fatalf("stdout %q, pgid %d", r.Streams[0], pgid)
	}
	waitFor(t, func() bool { return groupAlive(pgid) == 0 })
}

func TestKill(t *testing.T) {
	e := start(t)
	c := e.client(t)
	id := submit(t, c, map[string]any{"command": "core.system", "arguments": map[string]any{"name": "sleep", "args": []string{"1000"}}})
	waitFor(t, func() bool { return len(e.m.Jobs()) == 1 && e.m.Jobs()[0].PID != 0 })
	lst := result(t, c, submit(t, c, map[string]any{"command": "job.list"}))
	var infos []agent.JobInfo
	if err := json.Unmarshal([]byte(lst.Data), &infos); err != nil || len(infos) != 1 || infos[0].Cmd.ID != id {
		t.Fatalf("job.list = %+v %v", lst, err)
	}
	k := result(t, c, submit(t, c, map[string]any{"command": "job.kill", "arguments": map[string]any{"id": id, "signal": 9}}))
	if k.State != agent.StateSuccess {
		t.Fatalf("job.kill = %+v", k)
	}
	if r := result(t, c, id); r.State != agent.StateKilled {
		t.Fatalf("killed job = %+v", r)
	}
}

func TestDuplicateAndUnknown(t *testing.T) {
	e := start(t)
	c := e.client(t)
	id := submit(t, c, map[string]any{"command": "core.system", "arguments": map[string]any{"name": "sleep", "args": []string{"1000"}}})
	waitFor(t, func() bool { return len(e.m.Jobs()) == 1 })
	submit(t, c, map[string]any{"id": id, "command": "core.ping"})
	if r := result(t, c, id); r.State != agent.StateDuplicateID {
		t.Fatalf("duplicate = %+v", r)
	}
	if n := len(e.m.Jobs()); n != 1 {
		t.Fatalf("%d jobs after a duplicate", n)
	}
	e.m.Kill(id, 9)
	u := result(t, c, submit(t, c, map[string]any{"command": "no.such.command"}))
	if u.State != agent.StateUnknownCmd {
		t.Fatalf("unknown = %+v", u)
	}
}

func TestBadInput(t *testing.T) {
	e := start(t)
	c := e.client(t)
	ctx := context.Background()
	cases := []struct{ json, want string }{
		{`{"id": "bad1", "command": "core.system", "arguments": {"name": 5}}`, "field name: want a string, got a JSON number"},
		{`{"id": "bad2", "command": "core.system", "arguments": {"name": "ls", "args": "-l"}}`, "field args: want an array of a string"},
		{`{"id": "bad3", "command": "core.ping", "max_time": "10"}`, "field max_time: want an integer"},
		{`{"id": "bad4", "command": "core.ping", "bogus": 1}`, `unknown field "bogus"`},
		{`{"id": "bad5", "command": "core.system", "arguments": {"name": "ls", "nope": 1}}`, `unknown field "nope"`},
		{`{"id": "bad6", "command": "core.ping", "max_time": -1}`, "max_time -1 out of range"},
		{`{"id": "bad7", "command": "core.system" `, "truncated JSON"},
	}
	for _, tc := range cases {
		c.RPush(ctx, "core:default", tc.json)
	}
	c.RPush(ctx, "core:default", "not json at all") // no id: dropped, logged
	for i, tc := range cases {
		r := result(t, c, fmt.Sprintf("bad%d", i+1))
		if r.State != agent.StateError || !strings.Contains(r.Data, tc.want) {
			t.Errorf("%s -> %+v, want ERROR with %q", tc.json, r, tc.want)
		}
	}
	// The agent still serves.
	if r := result(t, c, submit(t, c, map[string]any{"command": "core.ping"})); r.State != agent.StateSuccess {
		t.Fatalf("ping after bad input = %+v", r)
	}
}

func TestQueueRunsInOrder(t *testing.T) {
	e := start(t)
	c := e.client(t)
	dir := t.TempDir()
	f := dir + "/order"
	var ids []string
	for i := 0; i < 3; i++ {
		// Each job appends its start, sleeps, appends its end: overlap
		// would interleave the marks.
		ids = append(ids, submit(t, c, map[string]any{"command": "bash", "queue": "q1",
			"arguments": map[string]any{"script": fmt.Sprintf("echo s%d >> %s; sleep 0.2; echo e%d >> %s", i, f, i, f)}}))
	}
	for _, id := range ids {
		if r := result(t, c, id); r.State != agent.StateSuccess {
			t.Fatalf("%s = %+v", id, r)
		}
	}
	b, _ := os.ReadFile(f)
	if got := strings.Join(strings.Fields(string(b)), ","); got != "s0,e0,s1,e1,s2,e2" {
		t.Fatalf("order = %s", got)
	}
}

func TestRecurringAndUnschedule(t *testing.T) {
	e := start(t)
	c := e.client(t)
	f := t.TempDir() + "/runs"
	id := submit(t, c, map[string]any{"command": "bash", "recurring_period": 1,
		"arguments": map[string]any{"script": "echo x >> " + f}})
	runs := func() int { b, _ := os.ReadFile(f); return strings.Count(string(b), "x") }
	waitFor(t, func() bool { return runs() >= 2 })
	// Still scheduled: the flag has no TTL.
	if ttl := c.TTL(context.Background(), "result:"+id+":flag").Val(); ttl != -1 {
		t.Fatalf("flag ttl of a scheduled job = %v", ttl)
	}
	u := result(t, c, submit(t, c, map[string]any{"command": "job.unschedule", "arguments": map[string]any{"id": id}}))
	if u.State != agent.StateSuccess {
		t.Fatalf("unschedule = %+v", u)
	}
	waitFor(t, func() bool { return len(e.m.Jobs()) == 0 })
	n := runs()
	time.Sleep(2500 * time.Millisecond)
	if runs() != n {
		t.Fatalf("job ran after job.unschedule (%d then %d runs)", n, runs())
	}
	if r := result(t, c, id); r.State != agent.StateSuccess {
		t.Fatalf("last result = %+v", r)
	}
}

func TestMaxRestart(t *testing.T) {
	e := start(t)
	c := e.client(t)
	f := t.TempDir() + "/runs"
	id := submit(t, c, map[string]any{"command": "bash", "max_restart": 2, "arguments": map[string]any{"script": "echo x >> " + f + "; exit 1"}})
	if r := result(t, c, id); r.State != agent.StateError || r.Code != 1 {
		t.Fatalf("result = %+v", r)
	}
	if b, _ := os.ReadFile(f); strings.Count(string(b), "x") != 3 {
		t.Fatalf("ran %d times, want 3", strings.Count(string(b), "x"))
	}
}

func TestTwoReadersAndDisconnect(t *testing.T) {
	e := start(t)
	// The submitter hangs up at once: the job runs anyway.
	c1 := e.client(t)
	id := submit(t, c1, map[string]any{"command": "bash", "arguments": map[string]any{"script": "sleep 0.5; echo done"}})
	c1.Close()
	var wg sync.WaitGroup
	got := make([]agent.JobResult, 2)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = result(t, e.client(t), id) }()
	}
	wg.Wait()
	for _, r := range got {
		if r.State != agent.StateSuccess || r.Streams[0] != "done\n" {
			t.Fatalf("reader saw %+v", r)
		}
	}
}

func TestRedisCLI(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli missing: scripts/deps.sh test installs redis-tools")
	}
	e := start(t)
	host, port, _ := net.SplitHostPort(e.addr)
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port, "--no-auth-warning"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := cli("PING"); got != "PONG" {
		t.Fatalf("PING = %q", got)
	}
	// Without AUTH nothing but connection commands.
	if got := cli("RPUSH", "core:default", `{"id":"x","command":"core.ping"}`); !strings.Contains(got, "NOAUTH") {
		t.Fatalf("unauthenticated RPUSH = %q", got)
	}
	if got := cli("-a", "wrong", "LLEN", "core:default"); !strings.Contains(got, "WRONGPASS") && !strings.Contains(got, "AUTH failed") {
		t.Fatalf("wrong token = %q", got)
	}
	auth := func(args ...string) string { return cli(append([]string{"-a", token}, args...)...) }
	if got := auth("SELECT", "0"); got != "OK" {
		t.Fatalf("SELECT 0 = %q", got)
	}
	id := "cli-" + strconv.Itoa(os.Getpid())
	auth("RPUSH", "core:default", `{"id":"`+id+`","command":"core.system","stream":true,"arguments":{"name":"echo","args":["hello"]}}`)
	res := auth("BRPOPLPUSH", "result:"+id, "result:"+id, "60")
	var r agent.JobResult
	if err := json.Unmarshal([]byte(res), &r); err != nil || r.State != agent.StateSuccess || r.Streams[0] != "hello\n" {
		t.Fatalf("result = %q (%v)", res, err)
	}
	if got := auth("LRANGE", "stream:"+id, "0", "0"); !strings.Contains(got, `"message":"hello"`) {
		t.Fatalf("stream = %q", got)
	}
	if got := auth("EXISTS", "result:"+id+":flag"); got != "1" {
		t.Fatalf("flag exists = %q", got)
	}
	auth("RPUSH", "core:default", `{"id":"`+id+`","command":"core.ping"}`)
	// The duplicate's answer joins the result list; the first result stays.
	waitFor(t, func() bool { return auth("LLEN", "result:"+id) == "2" })
	if got := auth("LRANGE", "result:"+id, "0", "-1"); !strings.Contains(got, "DUPILICATE_ID") || !strings.Contains(got, "SUCCESS") {
		t.Fatalf("results = %q", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
