package e2e

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/zosproject/zos/internal/testguest"
)

// TestMain fails the package's tests if goroutines outlive them (a server,
// client or background loop not stopped).
// The VM tests' guest initramfs is removed at the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { testguest.Cleanup(); os.Exit(code) }))
}
