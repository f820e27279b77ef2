package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd/nbdclient"
	"github.com/zosproject/zos/chunkstore/gc"
	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator/client"
)

func makeTree(t *testing.T) (string, map[string][]byte) {
	dir := t.TempDir()
	files := map[string][]byte{}
	for i, size := range []int{0, 10, 5000, 1 << 20, 3<<20 + 17, 9 << 20} {
		b := make([]byte, size)
		rand.Read(b)
		rel := fmt.Sprintf("d%d/f%d.bin", i%3, i)
		os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o640); err != nil {
			t.Fatal(err)
		}
		files[rel] = b
	}
	os.Symlink("d0/f0.bin", filepath.Join(dir, "link"))
	return dir, files
}

// mountFlist runs `zos flist mount` in the background and waits for the
// mount; the returned func unmounts (SIGTERM) and waits for the process.
func mountFlist(t *testing.T, c *testcluster.Cluster, i int, src, mnt, cacheDir string) func() {
	t.Helper()
	cmd := exec.Command(c.Bin, "flist", "mount", src, mnt, "--cache-dir", cacheDir, "--cache-size", "64M", "--fetch-timeout", "20s")
	cmd.Env = c.Env(i)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			exec.Command("umount", "-l", mnt).Run()
			<-done
		}
	}
	t.Cleanup(stop)
	testcluster.Eventually(t, 60*time.Second, func() error {
		select {
		case <-done:
			t.Fatalf("zos flist mount exited: %s", out.String())
		default:
		}
		if _, err := os.Stat(filepath.Join(mnt, "link")); err != nil {
			return err
		}
		return nil
	})
	return stop
}

func checkTree(t *testing.T, mnt string, files map[string][]byte) {
	t.Helper()
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(mnt, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s through the mount: err=%v equal=%v", rel, err, bytes.Equal(got, want))
		}
		st, _ := os.Stat(filepath.Join(mnt, rel))
		if st.Mode().Perm() != 0o640 {
			t.Fatalf("%s mode %v", rel, st.Mode())
		}
	}
	if target, err := os.Readlink(filepath.Join(mnt, "link")); err != nil || target != "d0/f0.bin" {
		t.Fatalf("symlink: %q %v", target, err)
	}
}

// TestFlistAndGC publishes an flist through a node, mounts it by name and
// over plain HTTP from "outside" the cluster, then runs the garbage
// collector: an unpinned blob goes, while the flist, a pinned blob and a
// vdisk's data all stay.
func TestFlistAndGC(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Args: []string{"--gc-grace", "1s"}})
	src, files := makeTree(t)
	flistFile := filepath.Join(t.TempDir(), "tree.flist")
	if out, err := c.CLI(1, "flist", "create", src, "-o", flistFile, "--push", "alice/tree"); err != nil {
		t.Fatalf("flist create: %v\n%s", err, out)
	}
	out, err := c.CLI(2, "flist", "list", "alice", "-o", "json")
	if err != nil || !strings.Contains(out, `"tree"`) {
		t.Fatalf("flist list: %v\n%s", err, out)
	}

	mnt := t.TempDir()
	stop := mountFlist(t, c, 0, "alice/tree", mnt, t.TempDir())
	checkTree(t, mnt, files)
	stop()

	// Blobs: one pinned, one not.
	pinned := filepath.Join(t.TempDir(), "pinned")
	loose := filepath.Join(t.TempDir(), "loose")
	pb, lb := make([]byte, 6<<20), make([]byte, 6<<20)
	rand.Read(pb)
	rand.Read(lb)
	os.WriteFile(pinned, pb, 0o644)
	os.WriteFile(loose, lb, 0o644)
	put := func(args ...string) string {
		out, err := c.CLI(0, append([]string{"store", "put"}, args...)...)
		if err != nil {
			t.Fatalf("store put: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return lines[len(lines)-1]
	}
	pinnedRef := put(pinned)
	looseRef := put(loose, "--no-pin")

	// A vdisk with data.
	if out, err := c.CLI(0, "vdisk", "create", "gcdisk", "--size", "8M"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	conn := attach(t, c, 0, "gcdisk")
	vdata := bytes.Repeat([]byte("zos!"), 1<<20)
	if err := conn.Write(0, vdata[:4<<20], nbdclient.FlagFUA); err != nil {
		t.Fatal(err)
	}
	conn.Disconnect()

	time.Sleep(2 * time.Second) // past the grace period
	out, err = c.CLI(2, "store", "gc", "-o", "json")
	if err != nil {
		t.Fatalf("store gc: %v\n%s", err, out)
	}
	var res gc.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Chunks < 2 || res.Shards < 2 {
		t.Fatalf("gc deleted %d chunks / %d shards; the loose blob alone has 2+ chunks", res.Chunks, res.Shards)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Client(0).Stream(ctx, http.MethodGet, "/api/v1/store/blobs/"+looseRef, nil, nil); !client.IsCode(err, "not_found") {
		t.Fatalf("the unpinned blob survived the gc: %v", err)
	}
	if out, err := c.CLI(1, "store", "get", pinnedRef, "-o", pinned+".back"); err != nil {
		t.Fatalf("pinned blob after gc: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(pinned + ".back"); !bytes.Equal(b, pb) {
		t.Fatal("pinned blob changed")
	}
	conn = attach(t, c, 1, "gcdisk")
	got, err := conn.Read(0, 4<<20)
	conn.Disconnect()
	if err != nil || !bytes.Equal(got, vdata[:4<<20]) {
		t.Fatalf("vdisk after gc: %v", err)
	}
	// The flist, mounted from outside the cluster over HTTP with an empty
	// cache, still reads every byte.
	mnt2 := t.TempDir()
	mountFlist(t, c, 2, c.APIAddr(1)+"/alice/tree.flist", mnt2, t.TempDir())
	checkTree(t, mnt2, files)
}
