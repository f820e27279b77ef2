package flistbench

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
)

func writeFile(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), data, 0o644)
}

// fetchCounter is an in-memory store that counts the bytes Fetch returns
// (what a mount pulled from the hub).
type fetchCounter struct {
	*mem.Store
	bytes atomic.Int64
}

func (s *fetchCounter) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	b, err := s.Store.Fetch(ctx, ref)
	s.bytes.Add(int64(len(b)))
	return b, err
}
