package container

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ExecSpec is a command to run inside a running container (what
// corex.dispatch and `zos container exec` need).
type ExecSpec struct {
	Args  []string          `json:"args"`
	Env   map[string]string `json:"env,omitempty"` // added to the container's
	Dir   string            `json:"dir,omitempty"` // default: the container's
	Stdin string            `json:"stdin,omitempty"`
	// MaxOutput bounds each of stdout and stderr [1 MiB]; the rest is
	// dropped and Truncated set.
	MaxOutput int `json:"max_output,omitempty"`
}

// ExecResult is what the command did.
type ExecResult struct {
	Code      int    `json:"code"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Exec runs a command in container id with the container's process settings
// (capabilities, user, environment) and waits for it; a cancelled ctx sends
// it SIGTERM.
func (m *Manager) Exec(ctx context.Context, id uint32, es ExecSpec) (*ExecResult, error) {
	if len(es.Args) == 0 {
		return nil, fmt.Errorf("%w: exec needs a command", ErrBadSpec)
	}
	r, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	if !pidAlive(r.Pid) {
		return nil, fmt.Errorf("%w: %d", ErrNotRunning, id)
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	var oci specs.Spec
	if err := json.Unmarshal(b, &oci); err != nil {
		return nil, fmt.Errorf("container: config.json: %w", err)
	}
	p := oci.Process
	p.Args = es.Args
	p.Terminal = false
	if es.Dir != "" {
		p.Cwd = es.Dir
	}
	for _, k := range sortedKeys(es.Env) {
		p.Env = append(p.Env, k+"="+es.Env[k])
	}
	f, err := os.CreateTemp(r.dir, "exec-*.json")
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	defer os.Remove(f.Name())
	err = json.NewEncoder(f).Encode(p)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	max := es.MaxOutput
	if max <= 0 {
		max = 1 << 20
	}
	stdout, stderr := &boundedBuffer{max: max}, &boundedBuffer{max: max}
	code, err := m.runc.exec(ctx, r.RuncID, f.Name(), strings.NewReader(es.Stdin), stdout, stderr)
	if err != nil {
		return nil, err
	}
	return &ExecResult{Code: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Truncated: stdout.over || stderr.over}, nil
}

// boundedBuffer keeps the first max bytes written to it and drops the rest
// (still reporting success, so the writer is not killed by EPIPE).
// (Not embedding bytes.Buffer: its ReadFrom would let io.Copy bypass Write.)
type boundedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.over = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *boundedBuffer) Bytes() []byte { return b.buf.Bytes() }
