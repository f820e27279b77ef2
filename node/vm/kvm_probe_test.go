package vm

import (
	"testing"
	"time"
)

func TestProbeKVMReturns(t *testing.T) {
	start := time.Now()
	err := probeKVM(5 * time.Second)
	t.Logf("probeKVM: %v (after %v)", err, time.Since(start))
}
