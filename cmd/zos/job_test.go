package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/client"
)

// TestJobCLI drives a real `zos node` through the CLI: job run streams
// output and exits with the job's code, job list and node info answer,
// and the RESP endpoint refuses a wrong token.
func TestJobCLI(t *testing.T) {
	c := testcluster.Start(t, 1, testcluster.Options{})
	out, err := c.CLI(0, "job", "run", "n1", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("job run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "hello\n") || !strings.Contains(out, "oops\n") {
		t.Fatalf("job run output:\n%s", out)
	}
	if out, err := c.CLI(0, "job", "run", c.Nodes[0].IP, "--", "true"); err != nil {
		t.Fatalf("job run true: %v\n%s", err, out)
	}
	if out, err := c.CLI(0, "job", "run", "n1", "--max-time", "1", "--", "sleep", "100"); !strings.Contains(out, "TIMEOUT") {
		t.Fatalf("job run with max-time: %v\n%s", err, out)
	}

	// A long job shows in job list and dies with job kill.
	addr := net.JoinHostPort(c.Nodes[0].IP, "6379")
	ac := client.New(addr, c.Token)
	defer ac.Close()
	ctx := context.Background()
	id, err := ac.Submit(ctx, agent.Command{Command: "core.system", Arguments: []byte(`{"name":"sleep","args":["1000"]}`)})
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		out, err := c.CLI(0, "job", "list", "n1")
		if err != nil || !strings.Contains(out, id) {
			return errors.New(out)
		}
		return nil
	})
	if out, err := c.CLI(0, "job", "kill", "n1", id); err != nil {
		t.Fatalf("job kill: %v\n%s", err, out)
	}
	if r, err := ac.Result(ctx, id, 60*time.Second); err != nil || r.State != agent.StateKilled {
		t.Fatalf("killed job: %+v %v", r, err)
	}
	out, err = c.CLI(0, "node", "info", "n1")
	if err != nil || !strings.Contains(out, "kernel") || !strings.Contains(out, "lo") {
		t.Fatalf("node info: %v\n%s", err, out)
	}
	bad := client.New(addr, "wrong")
	defer bad.Close()
	if err := bad.R.Ping(ctx).Err(); err == nil {
		t.Fatal("wrong token accepted")
	}
	// The node's /metrics shows the agent.
	resp, err := exec.Command("curl", "-s", "--cacert", c.CAFile(), "-H", "Authorization: Bearer "+c.Token, c.APIAddr(0)+"/metrics").Output()
	if err != nil || !strings.Contains(string(resp), "zos_agent_jobs_total") {
		t.Fatalf("metrics: %v", err)
	}
}

// TestAgentFlistMount: flist.mount of a published flist (REPO/NAME) on a
// real node, read through the mount, then flist.unmount.
func TestAgentFlistMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("flist mounts need root (CI runs as root)")
	}
	c := testcluster.Start(t, 1, testcluster.Options{})
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from an flist\n"), 0o644)
	if out, err := c.CLI(0, "flist", "create", src, "-o", filepath.Join(t.TempDir(), "t.flist"), "--push", "agent/tree"); err != nil {
		t.Fatalf("flist create: %v\n%s", err, out)
	}
	ac := client.New(net.JoinHostPort(c.Nodes[0].IP, "6379"), c.Token)
	defer ac.Close()
	ctx := context.Background()
	mnt := filepath.Join(t.TempDir(), "mnt")
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	if err := ac.JSON(ctx, "flist.mount", map[string]any{"url": "agent/tree", "target": mnt}, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "hello.txt"))
	if err != nil || string(b) != "hello from an flist\n" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
	var ms []map[string]string
	if err := ac.JSON(ctx, "flist.list", nil, &ms); err != nil || len(ms) != 1 || ms[0]["target"] != mnt {
		t.Fatalf("flist.list = %v %v", ms, err)
	}
	if err := ac.JSON(ctx, "flist.mount", map[string]any{"url": "agent/tree", "target": mnt}, nil); err == nil {
		t.Fatal("second mount at the same target accepted")
	}
	if err := ac.JSON(ctx, "flist.unmount", map[string]any{"target": mnt}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "hello.txt")); err == nil {
		t.Fatal("file still visible after flist.unmount")
	}
	if err := ac.JSON(ctx, "flist.mount", map[string]any{"url": "agent/nope", "target": mnt}, nil); err == nil {
		t.Fatal("mount of a missing flist accepted")
	}
}
