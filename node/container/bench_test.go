package container

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkStart: container start to the process's exit after its first
// output ("echo hi"), the manager (overlay, netns/veth/address for
// nic=default, bundle, runc run --detach) against the anchor, plain
// `runc run` of a bundle over the same root (read-only, no overlay, no
// network). Each iteration runs one of each, interleaved, so both see the
// same load; it reports each one's mean and their ratio. Terminate is
// outside the timed part.
func BenchmarkStart(b *testing.B) {
	e := newEnv(b)
	root := busyboxRoot(b)
	ctx := context.Background()
	dir := b.TempDir()
	oci, err := buildSpec(withProcess([]string{"echo", "hi"}, []string{"PATH=/bin"}, "/"), withRootPath(root),
		withNetNS(""), withCgroupsPath("/"+e.cfg.CgroupParent+"/bench"))
	if err != nil {
		b.Fatal(err)
	}
	oci.Root.Readonly = true
	if err := writeJSONAtomic(filepath.Join(dir, "config.json"), oci); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, p := range cgroupDirs("/" + e.cfg.CgroupParent + "/bench") {
			os.Remove(p)
		}
	})
	runcRun := func(i int) time.Duration {
		start := time.Now()
		var out bytes.Buffer
		cmd := exec.Command(e.m.cfg.Runc, "--root", filepath.Join(dir, "state"), "run", "--bundle", dir, fmt.Sprintf("bench-%d", i))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "hi" {
			b.Fatalf("runc run: %v %q", err, out.String())
		}
		return time.Since(start)
	}
	manager := func(nic string) time.Duration {
		start := time.Now()
		c, err := e.m.Create(ctx, Spec{Root: root, Nics: []Nic{{Type: nic}}, Command: []string{"echo", "hi"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.m.Wait(ctx, c.ID); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if out := logs(b, e.m, c.ID); out != "hi\n" {
			b.Fatalf("output %q", out)
		}
		if err := e.m.Terminate(ctx, c.ID); err != nil {
			b.Fatal(err)
		}
		return d
	}
	for _, nic := range []string{"none", "default"} {
		b.Run("nic="+nic, func(b *testing.B) {
			var mgr, anchor time.Duration
			i := 0
			for b.Loop() {
				i++
				mgr += manager(nic)
				anchor += runcRun(i)
			}
			n := float64(i)
			b.ReportMetric(float64(mgr.Milliseconds())/n, "manager-ms/op")
			b.ReportMetric(float64(anchor.Milliseconds())/n, "runc-run-ms/op")
			b.ReportMetric(float64(mgr)/float64(anchor), "ratio")
		})
	}
}
