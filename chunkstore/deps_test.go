package chunkstore_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: the chunk store stands alone; the control plane, the
// node agent and the front ends build on it, never the other way.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "github.com/zosproject/zos/chunkstore/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{"raft", "node", "orchestrator", "cmd", "blockd", "flist"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			p := "github.com/zosproject/zos/" + f
			if pkg == p || strings.HasPrefix(pkg, p+"/") {
				t.Errorf("chunkstore depends on %s", pkg)
			}
		}
	}
}
