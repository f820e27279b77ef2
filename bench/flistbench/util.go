package flistbench

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

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

// DownloadExtract serves tgz over HTTP on 127.0.0.1, downloads it and
// extracts it into dest, checks that binary is there, and returns the time
// from request to extracted: the flist cold start's anchor.
func DownloadExtract(ctx context.Context, tgz, dest, binary string) (time.Duration, error) {
	th, err := startHub(filepath.Dir(tgz))
	if err != nil {
		return 0, err
	}
	defer th.close()
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dest)
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, th.url+"/static/"+filepath.Base(tgz), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	cmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "-xzf", "-", "-C", dest)
	cmd.Stdin = resp.Body
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("extract: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dest, binary)); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Walk runs `find DIR -type f | xargs stat` and returns the files counted
// (files, when non-zero, instead of counting) and files per second.
func Walk(ctx context.Context, dir string, files int) (int, float64, error) {
	if files == 0 {
		err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files++
			}
			return nil
		})
		if err != nil {
			return 0, 0, err
		}
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "sh", "-c", `find "$1" -type f -print0 | xargs -0 stat > /dev/null`, "sh", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("find | stat: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return files, float64(files) / time.Since(start).Seconds(), nil
}
