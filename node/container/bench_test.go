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
)

// BenchmarkStart: container start to the process's output, the manager
// (overlay + bundle + runc run --detach, with and without a nic) against the
// anchor, plain `runc run` of a bundle over the same root (read-only, no
// overlay, no network). Terminate is outside the timed part.
func BenchmarkStart(b *testing.B) {
	e := newEnv(b)
	root := busyboxRoot(b)
	ctx := context.Background()
	for _, nic := range []string{"none", "default"} {
		b.Run("manager/nic="+nic, func(b *testing.B) {
			for b.Loop() {
				c, err := e.m.Create(ctx, Spec{Root: root, Nics: []Nic{{Type: nic}}, Command: []string{"echo", "hi"}})
				if err != nil {
					b.Fatal(err)
				}
				if err := e.m.Wait(ctx, c.ID); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if out := logs(b, e.m, c.ID); out != "hi\n" {
					b.Fatalf("output %q", out)
				}
				if err := e.m.Terminate(ctx, c.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
	b.Run("runc-run", func(b *testing.B) {
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
		i := 0
		for b.Loop() {
			i++
			var out bytes.Buffer
			cmd := exec.Command(e.m.cfg.Runc, "--root", filepath.Join(dir, "state"), "run", "--bundle", dir, fmt.Sprintf("bench-%d", i))
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "hi" {
				b.Fatalf("runc run: %v %q", err, out.String())
			}
		}
		for _, p := range cgroupDirs("/" + e.cfg.CgroupParent + "/bench") {
			os.Remove(p)
		}
	})
}
