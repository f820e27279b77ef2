package info_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/info"
	"github.com/zosproject/zos/node/resp"
)

func run(t *testing.T, ks *resp.Keyspace, id, cmd, args string) agent.JobResult {
	t.Helper()
	ks.RPush(agent.DefaultQueue, []byte(fmt.Sprintf(`{"id":%q,"command":%q,"arguments":%s}`, id, cmd, args)))
	v, ok, err := ks.BRPopLPush(context.Background(), 60*time.Second, "result:"+id, "result:"+id)
	if err != nil || !ok {
		t.Fatalf("%s: no result (%v)", cmd, err)
	}
	var r agent.JobResult
	if err := json.Unmarshal(v, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCommands(t *testing.T) {
	ks := resp.NewKeyspace(resp.KeyspaceConfig{})
	defer ks.Close()
	m, err := agent.New(agent.Config{Keyspace: ks, Version: "v-test"})
	if err != nil {
		t.Fatal(err)
	}
	info.Register(m)
	go m.Run(context.Background())
	defer m.Close()
	checks := map[string]func(string) bool{
		"info.cpu":  func(d string) bool { return strings.Contains(d, `"modelName"`) },
		"info.mem":  func(d string) bool { return strings.Contains(d, `"total":`) && !strings.Contains(d, `"total":0,`) },
		"info.disk": func(d string) bool { return strings.HasPrefix(d, "[") },
		"info.nic":  func(d string) bool { return strings.Contains(d, `"name":"lo"`) && strings.Contains(d, "127.0.0.1/8") },
		"info.os": func(d string) bool {
			return strings.Contains(d, `"kernelVersion":"`) && strings.Contains(d, `"hostname"`)
		},
		"info.port":    func(d string) bool { return strings.HasPrefix(d, "[") },
		"info.version": func(d string) bool { return strings.Contains(d, `"version":"v-test"`) },
		"disk.list":    func(d string) bool { return strings.HasPrefix(d, `{"blockdevices":[`) },
		"disk.mounts": func(d string) bool {
			return strings.Contains(d, `"mountpoint":"/proc"`) || strings.Contains(d, `"mountpoint":"/"`)
		},
	}
	i := 0
	for cmd, ok := range checks {
		i++
		r := run(t, ks, fmt.Sprintf("info-%d", i), cmd, "{}")
		if r.State != agent.StateSuccess || r.Level != 20 || !ok(r.Data) {
			t.Errorf("%s = %s %s", cmd, r.State, r.Data[:min(len(r.Data), 300)])
		}
		i++
		if r := run(t, ks, fmt.Sprintf("info-%d", i), cmd, `{"x":1}`); r.State != agent.StateError || r.Code != 400 {
			t.Errorf("%s with an unknown argument = %+v", cmd, r)
		}
	}
}
