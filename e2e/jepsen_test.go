package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator/client"
)

// The Jepsen-style test of the control plane: concurrent clients read,
// put and compare-and-swap a few keys of /api/v1/kv/lin through every node
// while a nemesis kills the leader with SIGKILL and restarts it; the
// history is then checked for linearizability with porcupine against the
// model of a versioned register per key.
//
// How outcomes enter the history, as in Jepsen:
//   - a definite answer (2xx, 409 conflict, a 404 read) is an operation
//     with its call and return times;
//   - a write that never reached a server (connection refused) or that a
//     server refused before proposing it (503 no_leader / no_quorum) had
//     no effect and is left out; so is a read that got no answer;
//   - any other failure of a write (timeout, connection reset, 503
//     outcome_unknown, other 5xx) is unknown: it may have happened at any
//     time after its call, so its return time is infinite.
//
// A client that gets an unknown outcome retries the write with the same
// Idempotency-Key (ZOS_JEPSEN_RETRY=0 turns that off), so the history also
// checks that a retried key takes effect at most once and reports the
// first outcome.
//
// ZOS_JEPSEN_DURATION sets how long the clients run (default 30s); use
// minutes for a soak test:
//
//	ZOS_JEPSEN_DURATION=10m go test ./e2e -run TestJepsenKV -timeout 30m -v

const jepsenNS = "lin"

type jKind int

const (
	jRead jKind = iota
	jPut
	jCAS
)

type jInput struct {
	Kind   jKind
	Key    string
	Value  string // put, cas
	Expect uint64 // cas: the version it must find (0: must not exist)
}

type jOutput struct {
	Unknown  bool   // a write that may or may not have taken effect
	Found    bool   // read
	Value    string // read
	Version  uint64 // read; put and cas when they succeeded
	Conflict bool   // cas refused
}

// jState is one key: a value and the version that counts its writes.
type jState struct {
	Exists  bool
	Value   string
	Version uint64
}

var jepsenModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(jInput).Key
			by[k] = append(by[k], op)
		}
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return jState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(jState), input.(jInput), output.(jOutput)
		next := jState{Exists: true, Value: in.Value, Version: st.Version + 1}
		switch in.Kind {
		case jRead:
			if !out.Found {
				return !st.Exists, st
			}
			return st.Exists && st.Value == out.Value && st.Version == out.Version, st
		case jPut:
			if out.Unknown {
				return true, next
			}
			return out.Version == next.Version, next
		case jCAS:
			match := st.Version == in.Expect // a missing key is at version 0
			switch {
			case out.Unknown && match:
				return true, next
			case out.Unknown, out.Conflict:
				return out.Unknown || !match, st
			}
			return match && out.Version == next.Version, next
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string { return describeOp(input.(jInput), output.(jOutput)) },
	DescribeState: func(state any) string {
		st := state.(jState)
		if !st.Exists {
			return "absent"
		}
		return fmt.Sprintf("%s @%d", st.Value, st.Version)
	},
}

func describeOp(in jInput, out jOutput) string {
	var call string
	switch in.Kind {
	case jRead:
		call = "read"
	case jPut:
		call = fmt.Sprintf("put(%s)", in.Value)
	case jCAS:
		call = fmt.Sprintf("cas(@%d -> %s)", in.Expect, in.Value)
	}
	switch {
	case out.Unknown:
		return call + " -> unknown"
	case out.Conflict:
		return call + " -> conflict"
	case in.Kind == jRead && !out.Found:
		return call + " -> absent"
	case in.Kind == jRead:
		return fmt.Sprintf("%s -> %s, version %d", call, out.Value, out.Version)
	}
	return fmt.Sprintf("%s -> ok, version %d", call, out.Version)
}

// jAttempt is how one HTTP attempt ended.
type jAttempt int

const (
	jNoEffect jAttempt = iota // never reached a server, or refused before proposing
	jDefinite                 // an answer
	jUnknown                  // may or may not have taken effect
)

type jClient struct {
	id    int
	c     *testcluster.Cluster
	start time.Time
	rng   *rand.Rand
	retry bool
	seq   int
	seen  map[string]uint64 // last version this client saw per key

	mu      *sync.Mutex
	history *[]porcupine.Operation
	stats   map[string]int
}

func (jc *jClient) now() int64 { return int64(time.Since(jc.start)) }

func (jc *jClient) record(in jInput, call int64, out jOutput, ret int64) {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	*jc.history = append(*jc.history, porcupine.Operation{ClientId: jc.id, Input: in, Call: call, Output: out, Return: ret})
}

func (jc *jClient) count(what string) {
	jc.mu.Lock()
	jc.stats[what]++
	jc.mu.Unlock()
}

func (jc *jClient) run(ctx context.Context, keys []string) {
	for ctx.Err() == nil {
		key := keys[jc.rng.IntN(len(keys))]
		switch r := jc.rng.IntN(10); {
		case r < 4:
			jc.read(key)
		case r < 7:
			jc.seq++
			jc.write(jInput{Kind: jPut, Key: key, Value: fmt.Sprintf("c%d-%d", jc.id, jc.seq)})
		default:
			jc.seq++
			jc.write(jInput{Kind: jCAS, Key: key, Value: fmt.Sprintf("c%d-%d", jc.id, jc.seq), Expect: jc.seen[key]})
		}
	}
}

func (jc *jClient) read(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	in := jInput{Kind: jRead, Key: key}
	call := jc.now()
	var e struct {
		Value   []byte `json:"value"`
		Version uint64 `json:"version"`
	}
	err := jc.c.Client(jc.rng.IntN(len(jc.c.Nodes))).Do(ctx, http.MethodGet, "/api/v1/kv/"+jepsenNS+"/"+key, nil, &e)
	ret := jc.now()
	switch {
	case err == nil:
		jc.seen[key] = e.Version
		jc.record(in, call, jOutput{Found: true, Value: string(e.Value), Version: e.Version}, ret)
		jc.count("read ok")
	case client.IsCode(err, "not_found"):
		jc.seen[key] = 0
		jc.record(in, call, jOutput{}, ret)
		jc.count("read ok")
	default:
		jc.count("read failed") // no answer, no effect: left out
	}
}

// write runs one put or cas to its end: attempts that had no effect are
// retried on another node, unknown ones with the same Idempotency-Key.
func (jc *jClient) write(in jInput) {
	idem := fmt.Sprintf("jepsen-c%d-%d", jc.id, jc.seq)
	call := jc.now()
	deadline := time.Now().Add(12 * time.Second)
	maybe := false
attempts:
	for attempt := 0; attempt < 5 && time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(50+jc.rng.IntN(200)) * time.Millisecond)
		}
		out, how := jc.writeOnce(in, idem)
		switch how {
		case jDefinite:
			if !out.Conflict {
				jc.seen[in.Key] = out.Version
			}
			jc.record(in, call, out, jc.now())
			jc.count(map[bool]string{false: "write ok", true: "cas conflict"}[out.Conflict])
			if maybe {
				jc.count("unknown resolved by a retry")
			}
			return
		case jUnknown:
			maybe = true
			if !jc.retry {
				break attempts
			}
		}
	}
	if maybe {
		jc.record(in, call, jOutput{Unknown: true}, math.MaxInt64)
		jc.count("write unknown")
		return
	}
	jc.count("write had no effect")
}

func (jc *jClient) writeOnce(in jInput, idem string) (jOutput, jAttempt) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	path := "/api/v1/kv/" + jepsenNS + "/" + in.Key
	if in.Kind == jCAS {
		path += "?if_version=" + strconv.FormatUint(in.Expect, 10)
	}
	hdr := http.Header{"Idempotency-Key": {idem}}
	// A body net/http cannot rewind: with an Idempotency-Key it would
	// otherwise resend a request lost with a killed node on a new
	// connection by itself, and report only that attempt's error
	// ("connection refused" for one that may have been applied).
	body := struct{ io.Reader }{strings.NewReader(in.Value)}
	resp, err := jc.c.Client(jc.rng.IntN(len(jc.c.Nodes))).Stream(ctx, http.MethodPut, path, body, hdr)
	if err != nil {
		var ae *client.Error
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Code == "conflict" && in.Kind == jCAS:
			return jOutput{Conflict: true}, jDefinite
		case errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable && (ae.Code == "no_leader" || ae.Code == "no_quorum"):
			return jOutput{}, jNoEffect
		case errors.Is(err, syscall.ECONNREFUSED):
			return jOutput{}, jNoEffect
		}
		return jOutput{}, jUnknown
	}
	defer resp.Body.Close()
	var kv struct {
		Version uint64 `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&kv); err != nil || kv.Version == 0 {
		return jOutput{}, jUnknown
	}
	return jOutput{Version: kv.Version}, jDefinite
}

func jepsenDuration(t *testing.T) time.Duration {
	d := 30 * time.Second
	if s := os.Getenv("ZOS_JEPSEN_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("ZOS_JEPSEN_DURATION=%q: want a duration such as 10m", s)
		}
	}
	return d
}

// leaderIndex asks the live nodes who leads; -1 when none knows.
func leaderIndex(t *testing.T, c *testcluster.Cluster) int {
	for i := range c.Nodes {
		if !c.Alive(i) {
			continue
		}
		cs, err := status(t, c, i)
		if err != nil || cs.LeaderID == "" {
			continue
		}
		for j, p := range c.Nodes {
			if p.ID == cs.LeaderID {
				return j
			}
		}
	}
	return -1
}

// sumMetric adds up a counter over the nodes' /metrics (for the log).
func sumMetric(t *testing.T, c *testcluster.Cluster, name string) float64 {
	sum := 0.0
	for i := range c.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.Client(i).Stream(ctx, http.MethodGet, "/metrics", nil, nil)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[0], name) {
					v, _ := strconv.ParseFloat(f[1], 64)
					sum += v
				}
			}
		}
		cancel()
	}
	return sum
}

// TestJepsenKV: see the comment at the top of the file.
func TestJepsenKV(t *testing.T) {
	dur := jepsenDuration(t)
	seed := rand.Uint64()
	t.Logf("seed %d, clients run for %v", seed, dur)
	c := testcluster.Start(t, 3, testcluster.Options{Args: []string{"--raft-heartbeat", "500ms", "--raft-election", "500ms",
		"--raft-snapshot-threshold", "300", "--raft-snapshot-interval", "1s"}})

	var mu sync.Mutex
	var history []porcupine.Operation
	stats := map[string]int{}
	keys := []string{"a", "b", "c", "d"}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		jc := &jClient{id: i, c: c, start: start, rng: rand.New(rand.NewPCG(seed, uint64(i))), retry: os.Getenv("ZOS_JEPSEN_RETRY") != "0",
			seen: map[string]uint64{}, mu: &mu, history: &history, stats: stats}
		wg.Add(1)
		go func() { defer wg.Done(); jc.run(ctx, keys) }()
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	defer stop()

	// The nemesis: kill the leader with SIGKILL, restart it, again.
	rng := rand.New(rand.NewPCG(seed, 99))
	kills := 0
	for time.Since(start) < dur {
		time.Sleep(min(time.Duration(2000+rng.IntN(3000))*time.Millisecond, max(dur-time.Since(start), 0)))
		if time.Since(start) >= dur {
			break
		}
		lead := leaderIndex(t, c)
		if lead < 0 {
			continue
		}
		c.Kill(lead)
		kills++
		t.Logf("%.1fs: killed the leader %s", time.Since(start).Seconds(), c.Nodes[lead].ID)
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		c.Restart(lead)
		c.WaitReady(lead, 90*time.Second)
	}
	stop()
	t.Logf("%d kills, %d operations in the history: %v", kills, len(history), stats)
	t.Logf("since the last restarts: %v retried proposals answered from the request table, %v proposals with an unknown outcome",
		sumMetric(t, c, "zos_raft_requests_deduplicated_total"), sumMetric(t, c, "zos_raft_apply_outcome_unknown_total"))
	if kills < 2 || stats["write ok"] < 50 || stats["read ok"] < 50 {
		t.Fatalf("too little happened to check anything: %d kills, %v", kills, stats)
	}

	timeout := max(2*time.Minute, 2*dur)
	res, info := porcupine.CheckOperationsVerbose(jepsenModel, history, timeout)
	switch res {
	case porcupine.Ok:
		t.Logf("linearizable: %d operations on %d keys", len(history), len(keys))
		return
	case porcupine.Unknown:
		t.Fatalf("the checker gave up after %v on %d operations; shorten ZOS_JEPSEN_DURATION", timeout, len(history))
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("zos-jepsen-%d.html", seed))
	if err := porcupine.VisualizePath(jepsenModel, info, path); err == nil {
		t.Logf("visualization of the history: %s", path)
	}
	t.Fatalf("the history is not linearizable:\n%s", explainIllegal(history, info))
}

// explainIllegal prints, for each key whose history is not linearizable,
// the end of the longest linearizable prefix the checker found and the
// operations it could not place after it.
func explainIllegal(history []porcupine.Operation, info porcupine.LinearizationInfo) string {
	parts := jepsenModel.Partition(history)
	partials := info.PartialLinearizationsOperations()
	var b strings.Builder
	at := func(ns int64) string {
		if ns == math.MaxInt64 {
			return "∞"
		}
		return fmt.Sprintf("%.3f", float64(ns)/1e9)
	}
	line := func(op porcupine.Operation) {
		fmt.Fprintf(&b, "  c%d %-40s [%s .. %s s]\n", op.ClientId, describeOp(op.Input.(jInput), op.Output.(jOutput)), at(op.Call), at(op.Return))
	}
	for p, part := range parts {
		if p >= len(partials) {
			break
		}
		var best []porcupine.Operation
		for _, l := range partials[p] {
			if len(l) > len(best) {
				best = l
			}
		}
		if len(best) == len(part) {
			continue
		}
		fmt.Fprintf(&b, "key %s: %d of %d operations linearized; the last of them:\n", part[0].Input.(jInput).Key, len(best), len(part))
		for _, op := range best[max(0, len(best)-6):] {
			line(op)
		}
		placed := map[porcupine.Operation]bool{}
		for _, op := range best {
			placed[op] = true
		}
		var rest []porcupine.Operation
		for _, op := range part {
			if !placed[op] {
				rest = append(rest, op)
			}
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].Call < rest[j].Call })
		fmt.Fprintf(&b, " none of the next could follow:\n")
		for _, op := range rest[:min(len(rest), 8)] {
			line(op)
		}
	}
	return b.String()
}
