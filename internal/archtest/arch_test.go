package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func list(t *testing.T, tests bool, patterns ...string) []Package {
	t.Helper()
	pkgs, err := List("", tests, patterns...)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("only %d packages listed", len(pkgs))
	}
	return pkgs
}

func report(t *testing.T, bad []string) {
	t.Helper()
	for _, b := range bad {
		t.Error(b)
	}
}

// TestLayering: the data plane does not depend on the daemon or the control
// plane's implementation, and nothing imports the command; the chunk store
// stands alone, tests included.
func TestLayering(t *testing.T) {
	report(t, CheckLayers(list(t, true, Module+"/..."), Layers))
}

// TestHarness: only tests and bench/ import localcluster, storetest,
// shardtest, journaltest, memexport, testcluster or a bench package.
func TestHarness(t *testing.T) {
	report(t, CheckHarness(list(t, false, Module+"/..."), Harness))
}

// TestProductLinksNoTesting: the zos binary does not link package testing,
// but through hashicorp/raft (its testing.go is part of the package).
func TestProductLinksNoTesting(t *testing.T) {
	deps := list(t, false, "-deps", Module+"/cmd/zos")
	report(t, CheckNoTesting(deps, TestingAllowed))
}

// TestRulesFail: each checker catches a deliberate bad import, in a
// synthetic package list and in a real temporary module listed by go list.
func TestRulesFail(t *testing.T) {
	m := Module + "/"
	synthetic := []Package{
		{ImportPath: m + "chunkstore/erasure", Deps: []string{m + "chunkstore", m + "raft"}},
		{ImportPath: m + "chunkstore/mem", ForTest: m + "chunkstore/mem", Deps: []string{m + "blockd"}},
		{ImportPath: m + "blockd", Imports: []string{m + "chunkstore/localcluster"}, Deps: []string{m + "chunkstore/localcluster"}},
		{ImportPath: m + "blockd", ForTest: m + "blockd", Imports: []string{m + "chunkstore/storetest", "testing"}},
		{ImportPath: m + "cmd/zos", Imports: []string{m + "bench/storebench", m + "chunkstore/storetest"}},
		{ImportPath: m + "chunkstore/disk", Imports: []string{"testing"}},
		{ImportPath: "github.com/hashicorp/raft", Imports: []string{"testing"}},
	}
	if bad := CheckLayers(synthetic, Layers); len(bad) != 2 ||
		!strings.Contains(bad[0], "chunkstore/erasure depends on "+m+"raft") || !strings.Contains(bad[1], "chunkstore/mem depends on "+m+"blockd") {
		t.Errorf("layers: %q", bad)
	}
	if bad := CheckHarness(synthetic, Harness); len(bad) != 2 ||
		!strings.Contains(bad[0], "blockd imports "+m+"chunkstore/localcluster") || !strings.Contains(bad[1], "cmd/zos imports "+m+"chunkstore/storetest") {
		t.Errorf("harness: %q", bad)
	}
	if bad := CheckNoTesting(synthetic, TestingAllowed); len(bad) != 1 || !strings.Contains(bad[0], "chunkstore/disk imports testing") {
		t.Errorf("testing: %q", bad)
	}

	// A throwaway module that claims zos's path: its chunkstore imports
	// its raft, its blockd imports its storetest, its cmd/zos links testing.
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":                     "module " + Module + "\n\ngo 1.22\n",
		"raft/raft.go":               "package raft\n",
		"chunkstore/chunkstore.go":   "package chunkstore\n\nimport _ \"" + m + "raft\"\n",
		"chunkstore/storetest/st.go": "package storetest\n\nimport _ \"testing\"\n",
		"blockd/blockd.go":           "package blockd\n\nimport _ \"" + m + "chunkstore/storetest\"\n",
		"cmd/zos/main.go":            "package main\n\nimport _ \"" + m + "blockd\"\n\nfunc main() {}\n",
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all, err := List(dir, true, "./...")
	if err != nil {
		t.Fatal(err)
	}
	if bad := CheckLayers(all, Layers); len(bad) != 1 || !strings.Contains(bad[0], "chunkstore depends on "+m+"raft") {
		t.Errorf("temp module, layers: %q", bad)
	}
	if bad := CheckHarness(all, Harness); len(bad) != 1 || !strings.Contains(bad[0], "blockd imports "+m+"chunkstore/storetest") {
		t.Errorf("temp module, harness: %q", bad)
	}
	deps, err := List(dir, false, "-deps", "./cmd/zos")
	if err != nil {
		t.Fatal(err)
	}
	if bad := CheckNoTesting(deps, TestingAllowed); len(bad) != 1 || !strings.Contains(bad[0], "chunkstore/storetest imports testing") {
		t.Errorf("temp module, testing: %q", bad)
	}
}

// TestLoopbackRanges: no test spells out a 127.0.0.x address beyond .1;
// packages take their own range from internal/testcluster/loopback.
func TestLoopbackRanges(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := CheckLoopback(strings.TrimSpace(string(out)), LoopbackExempt)
	if err != nil {
		t.Fatal(err)
	}
	report(t, bad)
	// And it catches one.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x_test.go"), []byte("package x; const a = \"127.0.0."+"7:0\""), 0o644); err != nil {
		t.Fatal(err)
	}
	if bad, err := CheckLoopback(dir, nil); err != nil || len(bad) != 1 {
		t.Fatalf("a hard-coded address: %q, %v", bad, err)
	}
}
