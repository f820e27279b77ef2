package fuse

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if goroutines outlive them (a mount,
// its server loop or a prefetcher not stopped).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
