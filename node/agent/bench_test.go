package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/resp"
)

// BenchmarkPing is the agent's own cost of one core.ping: submit, run,
// publish, read the result (no network).
func BenchmarkPing(b *testing.B) {
	ks := resp.NewKeyspace(resp.KeyspaceConfig{MaxBytes: 4 << 30})
	defer ks.Close()
	m, _ := agent.New(agent.Config{Keyspace: ks})
	b.ReportAllocs()
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("b%d", i)
		m.Submit([]byte(`{"id":"` + id + `","command":"core.ping"}`))
		if _, ok, _ := ks.BRPopLPush(ctx, 10*time.Second, "result:"+id, "result:"+id); !ok {
			b.Fatal("no result")
		}
	}
}
