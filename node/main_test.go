package node

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if goroutines outlive them (a server,
// client or background loop not stopped).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
