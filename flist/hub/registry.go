package hub

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/raft/fsm"
)

// Errors.
var (
	// ErrNotFound: no such repository or flist.
	ErrNotFound = errors.New("hub: not found")
	// ErrUnauthorized: the request has no valid token.
	ErrUnauthorized = errors.New("hub: unauthorized")
	// ErrForbidden: the identity may not do this (another user's repo,
	// devices without admin).
	ErrForbidden = errors.New("hub: forbidden")
	// ErrBadName: a repository or flist name that is not allowed.
	ErrBadName = errors.New("hub: bad name")
)

// Entry is one registered flist.
type Entry struct {
	Repo    string         `json:"repo"`
	Name    string         `json:"name"` // without ".flist"
	Ref     chunkstore.Ref `json:"ref"`  // the flist file, a blob in the chunk store
	Size    int64          `json:"size"` // bytes of the flist file
	Created time.Time      `json:"created"`
	Owner   string         `json:"owner"`
	Source  string         `json:"source,omitempty"`
	Stats   flist.Stats    `json:"stats"`
}

// Registry maps repo/name to flist entries. The node implements it over
// Raft; MemRegistry is an in-memory one. Get and Delete of a missing entry
// return an error wrapping ErrNotFound.
type Registry interface {
	Put(ctx context.Context, e Entry) error
	Get(ctx context.Context, repo, name string) (Entry, error)
	List(ctx context.Context, repo string) ([]Entry, error)
	ListRepos(ctx context.Context) ([]string, error)
	Delete(ctx context.Context, repo, name string) error
}

// CheckName validates a repository or flist name by the control plane's
// rule (fsm.ValidName): letters, digits, '.', '_' and '-', not starting
// with '.' or '-', at most 128 bytes.
func CheckName(s string) error {
	if !fsm.ValidName(s) {
		return fmt.Errorf("%w: %q (use letters, digits, '.', '_', '-'; at most 128)", ErrBadName, s)
	}
	return nil
}

// TrimFlistName strips a ".flist" suffix.
func TrimFlistName(s string) string { return strings.TrimSuffix(s, ".flist") }

// MemRegistry is an in-memory Registry, for tests and single-process use.
type MemRegistry struct {
	mu      sync.Mutex
	entries map[string]map[string]Entry
}

// NewMemRegistry returns an empty registry.
func NewMemRegistry() *MemRegistry { return &MemRegistry{entries: map[string]map[string]Entry{}} }

func (m *MemRegistry) Put(ctx context.Context, e Entry) error {
	if err := CheckName(e.Repo); err != nil {
		return err
	}
	if err := CheckName(e.Name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries[e.Repo] == nil {
		m.entries[e.Repo] = map[string]Entry{}
	}
	m.entries[e.Repo][e.Name] = e
	return nil
}

func (m *MemRegistry) Get(ctx context.Context, repo, name string) (Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[repo][name]
	if !ok {
		return Entry{}, fmt.Errorf("%w: %s/%s", ErrNotFound, repo, name)
	}
	return e, nil
}

func (m *MemRegistry) List(ctx context.Context, repo string) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	es, ok := m.entries[repo]
	if !ok {
		return nil, fmt.Errorf("%w: repository %s", ErrNotFound, repo)
	}
	out := make([]Entry, 0, len(es))
	for _, e := range es {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *MemRegistry) ListRepos(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for r, es := range m.entries {
		if len(es) > 0 {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (m *MemRegistry) Delete(ctx context.Context, repo, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[repo][name]; !ok {
		return fmt.Errorf("%w: %s/%s", ErrNotFound, repo, name)
	}
	delete(m.entries[repo], name)
	if len(m.entries[repo]) == 0 {
		delete(m.entries, repo)
	}
	return nil
}
