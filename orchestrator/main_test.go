package orchestrator

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if goroutines outlive them; the fuzz
// targets' shared control plane is closed first.
func TestMain(m *testing.M) { goleak.VerifyTestMain(runThen{m, func() { fuzzDown() }}) }

// runThen runs the tests, then a teardown, before goleak looks.
type runThen struct {
	m    *testing.M
	then func()
}

func (r runThen) Run() int {
	code := r.m.Run()
	r.then()
	return code
}
