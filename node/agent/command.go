package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// States of a JobResult, with 0-core's names (and its spelling of
// DUPILICATE_ID, which clients compare against).
const (
	StateSuccess     = "SUCCESS"
	StateError       = "ERROR"
	StateTimeout     = "TIMEOUT"
	StateKilled      = "KILLED"
	StateUnknownCmd  = "UNKNOWN_CMD"
	StateDuplicateID = "DUPILICATE_ID"
)

// Output levels (0-core): 1 stdout, 2 stderr, 20 a JSON result.
const (
	LevelStdout = 1
	LevelStderr = 2
	LevelResult = 20
)

// Command is the JSON a client pushes to core:default.
type Command struct {
	ID        string          `json:"id"`
	Command   string          `json:"command"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// Queue: commands sharing a queue run one after another.
	Queue string `json:"queue,omitempty"`
	// StatsInterval is accepted for compatibility and ignored.
	StatsInterval int `json:"stats_interval,omitempty"`
	// MaxTime in seconds: the job is killed (TIMEOUT) when it runs longer.
	MaxTime int `json:"max_time,omitempty"`
	// MaxRestart: a job that fails (ERROR) is run again up to this often.
	MaxRestart int `json:"max_restart,omitempty"`
	// RecurringPeriod in seconds: the job runs again this long after each
	// run ends, until job.unschedule or job.kill.
	RecurringPeriod int `json:"recurring_period,omitempty"`
	// Stream pushes every output line to stream:<id> as it happens.
	Stream bool `json:"stream,omitempty"`
	// LogLevels, when set, limits the levels pushed to stream:<id>.
	LogLevels []int    `json:"log_levels,omitempty"`
	Tags      []string `json:"tags,omitempty"`
}

// JobResult is the JSON the agent pushes to result:<id>.
type JobResult struct {
	ID      string `json:"id"`
	Command string `json:"command"`
	// Data is the job's result: the JSON of a built-in command's answer,
	// the last level-20 block of a process, or the error message.
	Data string `json:"data"`
	// Streams are the tails of stdout and stderr (bounded).
	Streams   [2]string `json:"streams"`
	Critical  string    `json:"critical"`
	Level     int       `json:"level"`
	State     string    `json:"state"`
	Code      int       `json:"code"`
	StartTime int64     `json:"starttime"` // ms since the epoch
	Time      int64     `json:"time"`      // run time in ms
	Tags      []string  `json:"tags"`
	Container uint64    `json:"container"`
}

// Limits on what a command may carry.
const (
	MaxIDLen      = 256
	MaxCommandLen = 256
	MaxQueueLen   = 256
	maxPeriod     = 365 * 24 * 3600
)

// ErrBadCommand marks a command that could not be decoded.
var ErrBadCommand = errors.New("agent: bad command")

// DecodeCommand decodes command JSON strictly: unknown fields, wrong types,
// trailing data and out-of-range values are errors. When the JSON is bad
// but an id can be found, the id is returned with the error so the agent
// can answer on result:<id>.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&c)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the command object")
	}
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the command object")
		}
	}
	if err != nil {
		id := probeID(b)
		if len(id) > MaxIDLen || !validID(id) {
			id = ""
		}
		return Command{ID: id}, fmt.Errorf("%w: %s", ErrBadCommand, describeJSONError(err))
	}
	switch {
	case c.ID == "":
		return c, fmt.Errorf("%w: id is required", ErrBadCommand)
	case len(c.ID) > MaxIDLen || !validID(c.ID):
		id := c.ID
		c.ID = ""
		return c, fmt.Errorf("%w: id %.40q must be 1-%d printable characters without spaces", ErrBadCommand, id, MaxIDLen)
	case c.Command == "" || len(c.Command) > MaxCommandLen:
		return c, fmt.Errorf("%w: command is required (at most %d bytes)", ErrBadCommand, MaxCommandLen)
	case len(c.Queue) > MaxQueueLen:
		return c, fmt.Errorf("%w: queue name longer than %d bytes", ErrBadCommand, MaxQueueLen)
	case c.MaxTime < 0 || c.MaxTime > maxPeriod:
		return c, fmt.Errorf("%w: max_time %d out of range 0..%d seconds", ErrBadCommand, c.MaxTime, maxPeriod)
	case c.MaxRestart < 0 || c.MaxRestart > 1000:
		return c, fmt.Errorf("%w: max_restart %d out of range 0..1000", ErrBadCommand, c.MaxRestart)
	case c.RecurringPeriod < 0 || c.RecurringPeriod > maxPeriod:
		return c, fmt.Errorf("%w: recurring_period %d out of range 0..%d seconds", ErrBadCommand, c.RecurringPeriod, maxPeriod)
	}
	return c, nil
}

// probeID finds a top-level "id" string in JSON that may be broken after
// it (truncated, wrong types elsewhere).
func probeID(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for {
		k, err := dec.Token()
		if err != nil {
			return ""
		}
		key, ok := k.(string)
		if !ok {
			return ""
		}
		if key == "id" {
			v, _ := dec.Token()
			s, _ := v.(string)
			return s
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
}

func validID(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// DecodeArgs decodes a command's arguments into v strictly (unknown
// fields and wrong types are errors; null or absent arguments leave v as
// it is).
func DecodeArgs(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ArgError{Err: errors.New(describeJSONError(err))}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &ArgError{Err: errors.New("trailing data after the arguments")}
	}
	return nil
}

// ArgError: the arguments did not fit the command (answered with code 400).
type ArgError struct{ Err error }

func (e *ArgError) Error() string { return "bad arguments: " + e.Err.Error() }
func (e *ArgError) Unwrap() error { return e.Err }

// Argf returns an ArgError.
func Argf(format string, a ...any) error { return &ArgError{Err: fmt.Errorf(format, a...)} }

func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(the object)"
		}
		return fmt.Sprintf("field %s: want %s, got a JSON %s", field, goTypeName(te.Type.String()), te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF):
		return "empty JSON"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "an array of " + goTypeName(t[2:])
	case strings.HasPrefix(t, "map["):
		return "an object"
	case t == "string":
		return "a string"
	case t == "bool":
		return "a boolean"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case strings.HasPrefix(t, "json.RawMessage"):
		return "JSON"
	}
	return "an object"
}
