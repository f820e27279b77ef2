package nbd

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Cacher is an optional Export capability for NBD_CMD_CACHE: the client
// announces it will soon access [off, off+length); the export may fetch it
// into a local cache. Exports without it answer CACHE with success and do
// nothing, which the protocol allows.
type Cacher interface {
	Cache(ctx context.Context, off, length int64) error
}

// StaticExports is an Exports over a fixed set of exports, for tests,
// benchmarks and single-export servers. Add and Remove may be called while
// a server uses it; connections already open keep their export.
type StaticExports struct {
	mu      sync.RWMutex
	exports map[string]staticExport
}

type staticExport struct {
	exp  Export
	info ExportInfo
}

// NewStaticExports returns an empty StaticExports.
func NewStaticExports() *StaticExports {
	return &StaticExports{exports: make(map[string]staticExport)}
}

// Add serves exp under info.Name (replacing an export of that name).
// info.Size is ignored: the export's Size is advertised.
func (s *StaticExports) Add(exp Export, info ExportInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exports[info.Name] = staticExport{exp: exp, info: info}
}

// Remove stops offering the export name to new connections.
func (s *StaticExports) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.exports, name)
}

func (s *StaticExports) get(name string) (staticExport, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.exports[name]
	if !ok {
		return e, fmt.Errorf("%w: %q", ErrUnknownExport, name)
	}
	e.info.Size = e.exp.Size()
	return e, nil
}

// List implements Exports, sorted by name.
func (s *StaticExports) List(ctx context.Context) ([]ExportInfo, error) {
	s.mu.RLock()
	out := make([]ExportInfo, 0, len(s.exports))
	for _, e := range s.exports {
		info := e.info
		info.Size = e.exp.Size()
		out = append(out, info)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Info implements Exports.
func (s *StaticExports) Info(ctx context.Context, name string) (ExportInfo, error) {
	e, err := s.get(name)
	return e.info, err
}

// Open implements Exports; release does nothing.
func (s *StaticExports) Open(ctx context.Context, name string) (Export, ExportInfo, func(), error) {
	e, err := s.get(name)
	if err != nil {
		return nil, ExportInfo{}, nil, err
	}
	return e.exp, e.info, func() {}, nil
}
