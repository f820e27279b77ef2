package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/node"
)

type storedFile struct {
	path string
	sum  [32]byte
	ref  string
}

// writeRandomFiles writes files of random sizes totalling about total bytes.
func writeRandomFiles(t *testing.T, dir string, total int64) []*storedFile {
	var out []*storedFile
	var n int64
	for i := 0; n < total; i++ {
		sz, _ := rand.Int(rand.Reader, big.NewInt(16<<20))
		size := min(sz.Int64()+1, total-n)
		if i%7 == 0 {
			size = min(int64(i*1000+1), total-n) // a few small files
		}
		b := make([]byte, size)
		rand.Read(b)
		p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, &storedFile{path: p, sum: sha256.Sum256(b)})
		n += size
	}
	return out
}

// readAll reads every file back through node i with `zos store get` and
// compares its digest.
func readAll(t *testing.T, c *testcluster.Cluster, i int, files []*storedFile) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(files))
	sem := make(chan struct{}, 4)
	for _, f := range files {
		wg.Add(1)
		go func(f *storedFile) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			resp, err := c.Client(i).Stream(ctx, http.MethodGet, "/api/v1/store/blobs/"+f.ref, nil, nil)
			if err != nil {
				errs <- fmt.Errorf("%s: %v", f.path, err)
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				errs <- fmt.Errorf("%s: %v", f.path, err)
				return
			}
			if !bytes.Equal(h.Sum(nil), f.sum[:]) {
				errs <- fmt.Errorf("%s: content differs", f.path)
			}
		}(f)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestStoreLoseTwoHealLoseTwo: six nodes, 4+2. Put ~200 MiB of random files,
// kill -9 two nodes: every byte reads back. Remove them: healing restores
// full redundancy (checked with `zos store stat`). Kill two different
// nodes: every byte reads back again.
func TestStoreLoseTwoHealLoseTwo(t *testing.T) {
	total := int64(200 << 20)
	if testing.Short() {
		total = 40 << 20
	}
	c := testcluster.Start(t, 6, testcluster.Options{Args: []string{"--dead-after", "3s", "--heal-interval", "10s"}})
	files := writeRandomFiles(t, t.TempDir(), total)

	// The profile of new chunks follows the cluster: 4+2 on six nodes.
	out, err := c.CLI(0, "store", "status", "--quick")
	if err != nil || !strings.Contains(out, "4+2") {
		t.Fatalf("store status before the puts: %v\n%s", err, out)
	}
	start := time.Now()
	for i, f := range files {
		out, err := c.CLI(i%6, "store", "put", f.path)
		if err != nil {
			t.Fatalf("store put %s: %v\n%s", f.path, err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		f.ref = strings.TrimSpace(lines[len(lines)-1])
		if _, err := chunkstore.ParseRef(f.ref); err != nil {
			t.Fatalf("store put printed %q", out)
		}
	}
	t.Logf("stored %d files (%d MiB) in %v", len(files), total>>20, time.Since(start).Round(time.Second))
	readAll(t, c, 0, files)

	// Lose two nodes.
	c.Kill(4)
	c.Kill(5)
	t.Log("killed n5 and n6")
	readAll(t, c, 1, files)

	// Remove them; the survivors rebuild what they held.
	for _, id := range []string{"n5", "n6"} {
		if out, err := c.CLI(0, "cluster", "remove", id); err != nil {
			t.Fatalf("remove %s: %v\n%s", id, err, out)
		}
	}
	healStart := time.Now()
	testcluster.Eventually(t, 10*time.Minute, func() error {
		for _, f := range files {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			var st node.BlobStatus
			err := c.Get(ctx, 0, "/api/v1/store/blobs/"+f.ref+"/stat", &st)
			cancel()
			if err != nil {
				return err
			}
			if st.Degraded+st.Unreadable > 0 {
				return fmt.Errorf("%s: %d degraded, %d unreadable chunks", f.path, st.Degraded, st.Unreadable)
			}
			for _, ch := range st.Chunks {
				// Full redundancy: every shard healthy, on a live
				// node, no node holding two shards of one chunk.
				homes := map[string]bool{}
				for _, sh := range ch.Shards {
					if !sh.Healthy || sh.Home == "n5" || sh.Home == "n6" || homes[sh.Home] {
						return fmt.Errorf("chunk %s (%s) shard %d at %s healthy=%v", ch.Ref.Short(), ch.Coding, sh.Index, sh.Home, sh.Healthy)
					}
					homes[sh.Home] = true
				}
			}
		}
		return nil
	})
	t.Logf("full redundancy restored %v after the removal", time.Since(healStart).Round(time.Second))
	out, err = c.CLI(0, "store", "stat", files[0].ref)
	if err != nil || !strings.Contains(out, "0 degraded, 0 unreadable") {
		t.Fatalf("zos store stat after healing: %v\n%s", err, out)
	}

	// Lose two different nodes: everything still reads.
	c.Kill(2)
	c.Kill(3)
	t.Log("killed n3 and n4")
	readAll(t, c, 0, files)
	readAll(t, c, 1, files)
}
