package archtest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Module is the import path of zos; rules name packages relative to it.
const Module = "github.com/zosproject/zos"

// Package is what the rules look at: a package's import path, its direct
// imports and its transitive dependencies, as `go list -json` reports them.
// A test variant ("p [p.test]", "p_test [p.test]") has ForTest set.
type Package struct {
	ImportPath string
	ForTest    string
	Imports    []string
	Deps       []string
}

// IsTest reports whether p is a test variant or a test binary.
func (p Package) IsTest() bool {
	return p.ForTest != "" || strings.HasSuffix(p.ImportPath, ".test")
}

// List runs `go list` on patterns (with test variants if tests is set) in
// dir ("" for the current directory).
func List(dir string, tests bool, patterns ...string) ([]Package, error) {
	args := []string{"list", "-e", "-json=ImportPath,ForTest,Imports,Deps"}
	if tests {
		args = append(args, "-test")
	}
	cmd := exec.Command("go", append(args, patterns...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("go list: %v\n%s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("go list: %v", err)
	}
	var pkgs []Package
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p Package
		if err := dec.Decode(&p); err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// rel returns path relative to the module and whether it is inside it.
func rel(path string) (string, bool) {
	if path == Module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, Module+"/")
	return r, ok
}

// under reports whether the module-relative path r is prefix or inside it
// ("" is the whole module).
func under(r, prefix string) bool {
	return prefix == "" || r == prefix || strings.HasPrefix(r, prefix+"/")
}

// Layer forbids packages under From from depending (transitively) on
// packages under any of Forbidden. With Tests, the dependencies of From's
// tests count too.
type Layer struct {
	From      string
	Forbidden []string
	Tests     bool
}

// Layers are zos's layering rules: the data plane does not depend on the
// daemon or on the control plane's implementation, and nothing imports
// the command. The chunk store stands alone even in its tests.
var Layers = []Layer{
	{From: "chunkstore", Forbidden: []string{"raft", "node", "orchestrator", "blockd", "flist", "cmd", "bench"}, Tests: true},
	{From: "flist", Forbidden: []string{"node", "cmd", "blockd"}},
	{From: "blockd", Forbidden: []string{"node", "cmd", "flist"}},
	{From: "raft", Forbidden: []string{"node", "orchestrator", "blockd", "flist", "cmd"}},
	{From: "orchestrator", Forbidden: []string{"node", "cmd"}},
	// The node agent is host-side: the node wires it to the cluster.
	{From: "node/agent", Forbidden: []string{"raft", "orchestrator", "blockd", "cmd"}},
	{From: "node/resp", Forbidden: []string{"node/agent", "raft", "orchestrator", "blockd", "flist", "chunkstore"}},
	// The container runtime is a library under the agent: it knows
	// neither the agent's wire protocol nor the cluster.
	// corex binds the container runtime to the agent: it reaches the
	// cluster only through the flist opener the node gives it.
	{From: "node/agent/corex", Forbidden: []string{"raft", "orchestrator", "blockd", "cmd", "flist/hub"}},
	{From: "node/container", Forbidden: []string{"node/agent", "node/resp", "raft", "orchestrator", "chunkstore", "blockd", "cmd"}},
	// kvm binds the VM runtime to the agent; blockd is reached only
	// through the Disks interface the node gives it.
	{From: "node/agent/kvm", Forbidden: []string{"raft", "orchestrator", "blockd", "chunkstore", "node/container", "cmd"}},
	// The VM runtime likewise; it reaches vdisks only over NBD and the
	// DiskLeaser interface, which the agent's kvm.* binding wires to blockd.
	{From: "node/vm", Forbidden: []string{"node/agent", "node/resp", "node/container", "raft", "orchestrator", "chunkstore", "blockd", "flist", "cmd"}},
	{From: "", Forbidden: []string{"cmd"}},
}

// CheckLayers returns a description of every dependency pkgs have that
// layers forbid. Packages under cmd are exempt (they wire everything).
func CheckLayers(pkgs []Package, layers []Layer) []string {
	var bad []string
	for _, p := range pkgs {
		r, ok := rel(p.ImportPath)
		if p.ForTest != "" {
			r, ok = rel(p.ForTest)
		}
		if !ok || under(r, "cmd") || strings.HasSuffix(p.ImportPath, ".test") {
			continue
		}
		for _, l := range layers {
			if !under(r, l.From) || (p.IsTest() && !l.Tests) {
				continue
			}
			for _, d := range p.Deps {
				dr, ok := rel(d)
				if !ok {
					continue
				}
				for _, f := range l.Forbidden {
					if under(dr, f) && !under(r, f) {
						bad = append(bad, fmt.Sprintf("%s depends on %s (rule: %s must not depend on %s)", p.ImportPath, d, orRoot(l.From), f))
					}
				}
			}
		}
	}
	return bad
}

func orRoot(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// Harness is the test and benchmark machinery: only tests, the packages
// under bench/ and the harness itself may import it. cmd/zos may import
// the bench packages (`zos bench`), nothing else of it.
var Harness = []string{
	"bench",
	"chunkstore/localcluster",
	"chunkstore/storetest",
	"chunkstore/shardtest",
	"chunkstore/journal/journaltest",
	"blockd/nbd/memexport",
	"internal/testcluster",
	"internal/guest",
	"internal/testguest",
}

// CheckHarness returns every non-test import of a harness package by a
// package outside the harness (cmd/zos excepted for bench/...).
func CheckHarness(pkgs []Package, harness []string) []string {
	isHarness := func(r string) bool {
		return slices.ContainsFunc(harness, func(h string) bool { return under(r, h) })
	}
	var bad []string
	for _, p := range pkgs {
		r, ok := rel(p.ImportPath)
		if !ok || p.IsTest() || isHarness(r) {
			continue
		}
		for _, imp := range p.Imports {
			ir, ok := rel(imp)
			if !ok || !isHarness(ir) {
				continue
			}
			if r == "cmd/zos" && under(ir, "bench") {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s imports %s: only tests and bench/ may use the harness", p.ImportPath, imp))
		}
	}
	return bad
}

// TestingAllowed are the packages outside zos that a product binary may
// link although they import "testing": hashicorp/raft's testing.go (its
// in-memory cluster helpers) is compiled into the package itself.
var TestingAllowed = []string{"github.com/hashicorp/raft"}

// CheckNoTesting returns every package of deps (the `go list -deps` of a
// product binary) that imports "testing", except those allowed.
func CheckNoTesting(deps []Package, allowed []string) []string {
	var bad []string
	for _, p := range deps {
		if !p.IsTest() && slices.Contains(p.Imports, "testing") && !slices.Contains(allowed, p.ImportPath) {
			bad = append(bad, fmt.Sprintf("%s imports testing, so the product binary links it", p.ImportPath))
		}
	}
	return bad
}

// LoopbackExempt are packages whose tests may spell 127.0.0.x addresses
// as data (node records in the state machine's tests), never listened on.
var LoopbackExempt = []string{"raft/fsm"}

var loopbackRE = regexp.MustCompile(`127\.0\.0\.(\d+)`)

// CheckLoopback returns every 127.0.0.x (x != 1) a test file under root
// spells out: tests listen on 127.0.0.1 or on their package's range from
// internal/testcluster/loopback, so that no two packages share an address.
func CheckLoopback(root string, exempt []string) ([]string, error) {
	var bad []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || slices.Contains(exempt, filepath.ToSlash(r)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, m := range loopbackRE.FindAllStringSubmatch(line, -1) {
				if m[1] != "1" {
					bad = append(bad, fmt.Sprintf("%s:%d: %s: take an address of the package's range from internal/testcluster/loopback", r, i+1, m[0]))
				}
			}
		}
		return nil
	})
	return bad, err
}
