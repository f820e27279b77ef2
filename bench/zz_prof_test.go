package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestProfRaft(t *testing.T) {
	res, err := Raft(context.Background(), RaftConfig{Duration: 5 * time.Second, Clients: 16}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		t.Logf("%s %.0f p50 %v p99 %v", r.Mode, r.OpsPerSec, r.P50, r.P99)
	}
}
