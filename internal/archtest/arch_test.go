package archtest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/zosproject/zos/"

type pkg struct {
	ImportPath string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	out, err := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Deps", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("only %d packages listed", len(pkgs))
	}
	return pkgs
}

// TestLayering: the data plane does not depend on the daemon or the control
// plane's implementation, and nothing imports the command.
func TestLayering(t *testing.T) {
	rules := []struct {
		from      string   // package path prefix (under the module)
		forbidden []string // dependency prefixes
	}{
		{"chunkstore", []string{"raft", "node", "orchestrator", "blockd", "flist", "cmd"}},
		{"flist", []string{"node", "cmd", "blockd"}},
		{"blockd", []string{"node", "cmd", "flist"}},
		{"raft", []string{"node", "orchestrator", "blockd", "flist", "cmd"}},
		{"orchestrator", []string{"node", "cmd"}},
		// The VM runtime reaches vdisks only over NBD and the DiskLeaser
		// interface; the agent binding wires it to blockd.
		{"node/vm", []string{"blockd", "raft", "chunkstore", "flist", "orchestrator", "node/resp", "cmd"}},
		{"", []string{"cmd"}},
	}
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, mod)
		if strings.HasPrefix(rel, "cmd") {
			continue
		}
		for _, r := range rules {
			if !strings.HasPrefix(rel, r.from) {
				continue
			}
			for _, d := range p.Deps {
				drel, ok := strings.CutPrefix(d, mod)
				if !ok {
					continue
				}
				for _, f := range r.forbidden {
					if drel == f || strings.HasPrefix(drel, f+"/") {
						t.Errorf("%s imports %s (rule: %s must not depend on %s)", rel, drel, orRoot(r.from), f)
					}
				}
			}
		}
	}
}

func orRoot(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}
