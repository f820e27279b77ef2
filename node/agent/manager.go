package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/node/resp"
)

// DefaultQueue is the list clients push commands to.
const DefaultQueue = "core:default"

// Handler runs one command. It returns the command's answer (encoded as
// JSON into the result's data, level 20) or an error (state ERROR; an
// *ArgError answers code 400, an *ExitError the process's code). A handler
// that ran a process with Job.Exec may return nil: the result then carries
// the process's output and exit code.
type Handler func(ctx context.Context, j *Job) (any, error)

// Config configures a Manager.
type Config struct {
	// Keyspace holds the queues, results and streams (required).
	Keyspace *resp.Keyspace
	// ResultTTL: results, flags and streams are kept this long after a
	// job ends (default 300s, as 0-core).
	ResultTTL time.Duration
	// MaxOutput bounds each of stdout and stderr kept in a result, and a
	// level-20 result (default 1 MiB).
	MaxOutput int
	// MaxStreamItems bounds stream:<id>: the oldest lines are dropped when
	// nobody reads (default 10000).
	MaxStreamItems int
	// Version is reported by info.version.
	Version    string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Manager runs jobs: it reads commands from core:default, acknowledges
// them, runs them through the registered handlers, and publishes results.
type Manager struct {
	cfg Config
	ks  *resp.Keyspace
	log *slog.Logger

	mu       sync.Mutex
	handlers map[string]Handler
	jobs     map[string]*Job
	queues   map[string][]*Job // pending jobs of busy queues
	closing  bool
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc

	running prometheus.Gauge
	states  *prometheus.CounterVec
	byState map[string]prometheus.Counter
	active  prometheus.GaugeFunc
}

// New returns a manager with the built-in core, job and process commands
// registered.
func New(cfg Config) (*Manager, error) {
	if cfg.Keyspace == nil {
		return nil, errors.New("agent: Keyspace is required")
	}
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = 300 * time.Second
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = 1 << 20
	}
	if cfg.MaxStreamItems <= 0 {
		cfg.MaxStreamItems = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	m := &Manager{cfg: cfg, ks: cfg.Keyspace, log: cfg.Logger.With("component", "agent"),
		handlers: map[string]Handler{}, jobs: map[string]*Job{}, queues: map[string][]*Job{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{Name: "zos_agent_processes_running",
		Help: "Processes run by agent jobs that are alive."})
	m.states = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_agent_jobs_total",
		Help: "Agent job runs finished, by state."}, []string{"state"})
	m.active = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zos_agent_jobs_running",
		Help: "Agent jobs running or scheduled."}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.jobs))
	})
	m.byState = map[string]prometheus.Counter{}
	for _, st := range []string{StateSuccess, StateError, StateTimeout, StateKilled, StateUnknownCmd, StateDuplicateID} {
		m.byState[st] = m.states.WithLabelValues(st)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.running, m.states, m.active} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("agent: metrics: %w", err)
			}
		}
	}
	registerBuiltins(m)
	return m, nil
}

// Register adds a command. Registering a name twice replaces it.
func (m *Manager) Register(name string, h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handlers[name] = h
}

// Commands returns the registered command names, sorted.
func (m *Manager) Commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.handlers))
	for n := range m.handlers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Version returns Config.Version.
func (m *Manager) Version() string { return m.cfg.Version }

// Run reads core:default until ctx ends or Close is called, then kills
// and reaps every job before it returns.
func (m *Manager) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, m.cancel)
	defer stop()
	defer m.shutdown()
	for {
		_, raw, ok, err := m.ks.BLPop(m.ctx, 0, DefaultQueue)
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, resp.ErrClosed) {
				return nil
			}
			return err
		}
		if ok {
			m.Submit(raw)
		}
		// Take what else is queued without blocking again.
		for i := 0; i < 256; i++ {
			raw, ok := m.ks.LPop(DefaultQueue)
			if !ok {
				break
			}
			m.Submit(raw)
		}
	}
}

// Close stops Run (and so every job).
func (m *Manager) Close() { m.cancel() }

func (m *Manager) shutdown() {
	m.mu.Lock()
	m.closing = true
	var pending []*Job
	for q, js := range m.queues {
		pending = append(pending, js...)
		m.queues[q] = nil
	}
	for _, j := range pending {
		delete(m.jobs, j.Cmd.ID)
	}
	for _, j := range m.jobs {
		j.kill(syscall.SIGKILL)
	}
	m.mu.Unlock()
	for _, j := range pending { // never started: answer, and they are done
		m.publish(j.Cmd, JobResult{State: StateKilled, Code: 137, Data: "agent shut down before the job started"}, true)
		m.wg.Done()
	}
	m.wg.Wait()
}

// Submit takes one command's JSON as a client pushed it.
func (m *Manager) Submit(raw []byte) {
	cmd, err := DecodeCommand(raw)
	if err != nil {
		if cmd.ID == "" {
			m.log.Warn("dropped a command without a usable id", "err", err, "bytes", len(raw))
			return
		}
		if m.duplicate(cmd.ID) {
			m.log.Warn("dropped a bad command with the id of another job", "id", cmd.ID, "err", err)
			return
		}
		m.ack(cmd.ID)
		m.publish(cmd, JobResult{State: StateError, Code: 400, Data: err.Error(), Critical: err.Error()}, true)
		return
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return
	}
	if _, dup := m.jobs[cmd.ID]; dup || m.ks.Exists(flagKey(cmd.ID)) {
		m.mu.Unlock()
		m.log.Warn("dropped a command with a duplicate id", "id", cmd.ID, "command", cmd.Command)
		m.byState[StateDuplicateID].Inc()
		// Answer on the result list so the sender sees why; the flag and
		// the original job are left alone.
		b, _ := json.Marshal(JobResult{ID: cmd.ID, Command: cmd.Command, State: StateDuplicateID, Code: 409,
			Data: "a job with id " + cmd.ID + " exists", Tags: cmd.Tags, StartTime: time.Now().UnixMilli()})
		m.ks.RPush(resultKey(cmd.ID), b)
		return
	}
	h := m.handlers[cmd.Command]
	if h == nil {
		m.mu.Unlock()
		m.ack(cmd.ID)
		m.publish(cmd, JobResult{State: StateUnknownCmd, Code: 404, Data: "unknown command: " + cmd.Command}, true)
		return
	}
	j := &Job{Cmd: cmd, m: m, started: time.Now(), wake: make(chan struct{})}
	m.jobs[cmd.ID] = j
	m.wg.Add(1)
	start := true
	if cmd.Queue != "" {
		q, busy := m.queues[cmd.Queue]
		if busy {
			m.queues[cmd.Queue] = append(q, j)
			start = false
		} else {
			m.queues[cmd.Queue] = nil // busy, nothing pending
		}
	}
	m.mu.Unlock()
	m.ack(cmd.ID)
	if start {
		go m.runQueue(j, h)
	}
}

func (m *Manager) duplicate(id string) bool {
	m.mu.Lock()
	_, dup := m.jobs[id]
	m.mu.Unlock()
	return dup || m.ks.Exists(flagKey(id))
}

func flagKey(id string) string   { return "result:" + id + ":flag" }
func resultKey(id string) string { return "result:" + id }
func streamKey(id string) string { return "stream:" + id }

// ack marks the job as running: result:<id>:flag exists without a TTL.
func (m *Manager) ack(id string) {
	fk := flagKey(id)
	if _, err := m.ks.RPush(fk, []byte("")); err != nil {
		m.log.Warn("could not acknowledge job", "id", id, "err", err)
	}
	m.ks.Persist(fk)
}

// runQueue runs j, then the jobs queued behind it on the same queue.
func (m *Manager) runQueue(j *Job, h Handler) {
	for j != nil {
		m.runJob(j, h)
		if j.Cmd.Queue == "" {
			return
		}
		m.mu.Lock()
		q := m.queues[j.Cmd.Queue]
		if len(q) == 0 || m.closing {
			delete(m.queues, j.Cmd.Queue)
			m.mu.Unlock()
			return
		}
		j, m.queues[j.Cmd.Queue] = q[0], q[1:]
		h = m.handlers[j.Cmd.Command]
		m.mu.Unlock()
	}
}

// runJob runs a job to its end: restarts, recurrences, the final result.
func (m *Manager) runJob(j *Job, h Handler) {
	defer m.wg.Done()
	defer func() {
		m.mu.Lock()
		delete(m.jobs, j.Cmd.ID)
		m.mu.Unlock()
	}()
	restarts := 0
	for {
		res := m.runOnce(j, h)
		j.mu.Lock()
		killed, unscheduled := j.killed, j.unscheduled
		j.mu.Unlock()
		if res.State == StateError && restarts < j.Cmd.MaxRestart && !killed && m.ctx.Err() == nil {
			restarts++
			m.log.Info("restarting failed job", "id", j.Cmd.ID, "restart", restarts, "of", j.Cmd.MaxRestart)
			continue
		}
		last := j.Cmd.RecurringPeriod == 0 || killed || unscheduled || m.ctx.Err() != nil
		m.publish(j.Cmd, res, last)
		if last {
			return
		}
		restarts = 0
		t := time.NewTimer(time.Duration(j.Cmd.RecurringPeriod) * time.Second)
		select {
		case <-t.C:
		case <-j.wake: // unscheduled or killed between runs: the last result stands
			t.Stop()
			m.finish(j.Cmd)
			return
		case <-m.ctx.Done():
			t.Stop()
			m.finish(j.Cmd)
			return
		}
	}
}

func (m *Manager) runOnce(j *Job, h Handler) JobResult {
	ctx, cancel := context.WithCancelCause(m.ctx)
	if j.Cmd.MaxTime > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeoutCause(ctx, time.Duration(j.Cmd.MaxTime)*time.Second, context.DeadlineExceeded)
		defer c2()
	}
	defer cancel(nil)
	start := time.Now()
	j.mu.Lock()
	j.cancel, j.runs = cancel, j.runs+1
	j.capture = nil // made by Exec: most commands run no process
	j.exitCode, j.ranProcess = 0, false
	killedBefore := j.killed
	j.mu.Unlock()
	var data any
	var err error
	if killedBefore {
		err = errKilled
	} else {
		data, err = m.call(ctx, j, h)
	}
	res := JobResult{StartTime: start.UnixMilli(), Time: time.Since(start).Milliseconds()}
	j.mu.Lock()
	killed, code, ranProcess, c := j.killed, j.exitCode, j.ranProcess, j.capture
	res.Container = j.container
	j.cancel = nil
	j.mu.Unlock()
	var streams [2]string
	var pdata string
	var hasData bool
	if c != nil {
		streams, pdata, hasData = c.result()
	}
	res.Streams = streams
	if ranProcess {
		res.Code = code
		if hasData {
			res.Data, res.Level = pdata, LevelResult
		}
	}
	var exit *ExitError
	var argErr *ArgError
	switch {
	case killed:
		res.State, res.Data = StateKilled, "job killed"
		if res.Code == 0 {
			res.Code = 137
		}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(context.Cause(ctx), context.DeadlineExceeded) && err != nil:
		res.State, res.Data = StateTimeout, fmt.Sprintf("job exceeded max_time of %ds and was killed", j.Cmd.MaxTime)
		if res.Code == 0 {
			res.Code = 124
		}
	case err == nil:
		res.State = StateSuccess
		if !ranProcess || data != nil {
			b, merr := json.Marshal(data)
			if merr != nil {
				res.State, res.Code, res.Data = StateError, 500, "encoding the result: "+merr.Error()
				break
			}
			res.Data, res.Level = string(b), LevelResult
		}
	case errors.As(err, &exit):
		res.State, res.Code = StateError, exit.Code
		if !hasData {
			res.Data = err.Error()
		}
	case errors.As(err, &argErr):
		res.State, res.Code, res.Data = StateError, 400, err.Error()
	default:
		res.State, res.Code, res.Data, res.Critical = StateError, 500, err.Error(), err.Error()
	}
	m.byState[res.State].Inc()
	return res
}

// call runs the handler, turning a panic into an error.
func (m *Manager) call(ctx context.Context, j *Job, h Handler) (data any, err error) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("command handler panicked", "command", j.Cmd.Command, "id", j.Cmd.ID, "panic", r)
			err = fmt.Errorf("internal error in %s: %v", j.Cmd.Command, r)
		}
	}()
	return h(ctx, j)
}

// publish replaces result:<id> with res; when last, the job is over and
// its keys expire after ResultTTL.
func (m *Manager) publish(cmd Command, res JobResult, last bool) {
	res.ID, res.Command, res.Tags = cmd.ID, cmd.Command, cmd.Tags
	if res.StartTime == 0 {
		res.StartTime = time.Now().UnixMilli()
	}
	b, err := json.Marshal(res)
	if err != nil {
		m.log.Error("encoding a job result", "id", cmd.ID, "err", err)
		return
	}
	rk := resultKey(cmd.ID)
	m.ks.Del(rk)
	if _, err := m.ks.RPush(rk, b); err != nil {
		// Output too large for the keyspace: keep the verdict.
		res.Streams, res.Data = [2]string{}, "result dropped: "+err.Error()
		b, _ = json.Marshal(res)
		if _, err := m.ks.RPush(rk, b); err != nil {
			m.log.Error("could not publish a job result", "id", cmd.ID, "err", err)
		}
	}
	m.ks.Expire(rk, m.cfg.ResultTTL)
	if cmd.Stream {
		flags := 0x2
		if res.State != StateSuccess {
			flags = 0x4
		}
		m.pushStream(cmd.ID, 0, "", flags)
	}
	if last {
		m.finish(cmd)
	}
	m.log.Debug("job finished", "id", cmd.ID, "command", cmd.Command, "state", res.State, "code", res.Code)
}

// finish lets the job's flag and stream expire (publish set the result's
// TTL).
func (m *Manager) finish(cmd Command) {
	m.ks.Expire(flagKey(cmd.ID), m.cfg.ResultTTL)
	if cmd.Stream {
		m.ks.Expire(streamKey(cmd.ID), m.cfg.ResultTTL)
	}
}

// StreamMessage is one element of stream:<id>, as 0-core's clients read
// it: message.meta is level<<16 | flags (0x2 end of a successful job,
// 0x4 end of a failed one).
type StreamMessage struct {
	Message struct {
		Message string `json:"message"`
		Epoch   int64  `json:"epoch"` // ns since the epoch
		Meta    int    `json:"meta"`
	} `json:"message"`
}

func (m *Manager) streamSink(cmd Command) func(level int, msg string) {
	if !cmd.Stream {
		return nil
	}
	levels := map[int]bool{}
	for _, l := range cmd.LogLevels {
		levels[l] = true
	}
	return func(level int, msg string) {
		if len(levels) > 0 && !levels[level] {
			return
		}
		m.pushStream(cmd.ID, level, msg, 0)
	}
}

func (m *Manager) pushStream(id string, level int, msg string, flags int) {
	var sm StreamMessage
	sm.Message.Message, sm.Message.Epoch, sm.Message.Meta = msg, time.Now().UnixNano(), level<<16|flags
	b, _ := json.Marshal(sm)
	key := streamKey(id)
	for m.ks.LLen(key) >= m.cfg.MaxStreamItems {
		m.ks.LPop(key) // nobody reads: drop the oldest
	}
	if _, err := m.ks.RPush(key, b); err != nil {
		m.log.Debug("stream line dropped", "id", id, "err", err)
	}
}

// Jobs returns the running and scheduled jobs.
func (m *Manager) Jobs() []JobInfo {
	m.mu.Lock()
	js := make([]*Job, 0, len(m.jobs))
	for _, j := range m.jobs {
		js = append(js, j)
	}
	m.mu.Unlock()
	out := make([]JobInfo, 0, len(js))
	for _, j := range js {
		out = append(out, j.info())
	}
	sort.Slice(out, func(a, b int) bool { return out[a].StartTime < out[b].StartTime })
	return out
}

func (m *Manager) job(id string) *Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jobs[id]
}

// Kill signals a job (default SIGTERM); its result is KILLED.
func (m *Manager) Kill(id string, sig syscall.Signal) error {
	j := m.job(id)
	if j == nil {
		return fmt.Errorf("agent: no job %s", id)
	}
	m.dequeue(j)
	j.kill(sig)
	return nil
}

// dequeue removes a job still waiting on its queue and publishes KILLED.
func (m *Manager) dequeue(j *Job) {
	m.mu.Lock()
	q := m.queues[j.Cmd.Queue]
	for i, x := range q {
		if x == j {
			m.queues[j.Cmd.Queue] = append(q[:i:i], q[i+1:]...)
			delete(m.jobs, j.Cmd.ID)
			m.mu.Unlock()
			m.publish(j.Cmd, JobResult{State: StateKilled, Code: 137, Data: "job killed before it started"}, true)
			m.wg.Done()
			return
		}
	}
	m.mu.Unlock()
}

// Unschedule stops a recurring job after its current run.
func (m *Manager) Unschedule(id string) error {
	j := m.job(id)
	if j == nil {
		return fmt.Errorf("agent: no job %s", id)
	}
	j.mu.Lock()
	j.unscheduled = true
	j.closeWakeLocked()
	j.mu.Unlock()
	return nil
}
