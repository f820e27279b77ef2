package agent_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/agent/flistmount"
)

// FuzzDecodeCommand: any bytes decode to a command or a clear error, never
// a panic; a decoded command survives a round trip.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","command":"core.ping"}`,
		`{"id":"2","command":"core.system","arguments":{"name":"ls","args":["-l"]},"queue":"q","max_time":5,"stream":true,"tags":["a"],"log_levels":[1,2]}`,
		`{"id":"3","command":"bash","recurring_period":10,"max_restart":2,"arguments":{"script":"echo"}}`,
		`{"id": 5}`, `{"id":"x","command":"c"} {}`, `[]`, `{"id":"a b","command":"c"}`, `{"id":"t","command":"c"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := agent.DecodeCommand(b)
		if err != nil {
			return
		}
		if c.ID == "" || c.Command == "" {
			t.Fatalf("decoded a command without id or name: %+v", c)
		}
		b2, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := agent.DecodeCommand(b2)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b2, err)
		}
		if c2.ID != c.ID || c2.Command != c.Command || c2.MaxTime != c.MaxTime {
			t.Fatalf("round trip changed %+v to %+v", c, c2)
		}
	})
}

// argTypes are the argument structs of every command.
var argTypes = map[string]func() any{
	"core.system":    func() any { return new(agent.SystemArgs) },
	"bash":           func() any { return new(agent.BashArgs) },
	"job.list":       func() any { return new(agent.JobArgs) },
	"job.kill":       func() any { return new(agent.KillArgs) },
	"job.unschedule": func() any { return new(agent.JobArgs) },
	"process.list":   func() any { return new(agent.ProcessArgs) },
	"process.kill":   func() any { return new(agent.ProcessKillArgs) },
	"bridge.create":  func() any { return new(bridge.Args) },
	"bridge.delete":  func() any { return new(bridge.NameArgs) },
	"flist.mount":    func() any { return new(flistmount.MountArgs) },
	"flist.unmount":  func() any { return new(flistmount.TargetArgs) },
	"no-arguments":   func() any { return new(struct{}) }, // core.ping, core.state, info.*, disk.*, *.list
}

// FuzzCommandArgs: every command's arguments decode strictly or fail with
// an ArgError; what decodes survives a round trip unchanged.
func FuzzCommandArgs(f *testing.F) {
	for _, s := range []string{
		`{"name":"ls","args":["-l"],"dir":"/","env":{"A":"b"},"stdin":"x"}`, `{"script":"echo hi","stdin":""}`,
		`{"id":"x","signal":9}`, `{"pid":1}`, `{"name":"br0","hwaddr":"02:00:00:00:00:01","network":{"mode":"static","nat":true,"settings":{"cidr":"10.0.0.1/24"}}}`,
		`{"url":"repo/name","target":"/mnt/x","rw":true}`, `{"target":"/mnt"}`, `{}`, `null`, `{"name":5}`, `[1]`, `{"args":"x"}`,
	} {
		for i := range len(argTypes) {
			f.Add(uint8(i), []byte(s))
		}
	}
	names := make([]string, 0, len(argTypes))
	for n := range argTypes {
		names = append(names, n)
	}
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		mk := argTypes[names[int(which)%len(names)]]
		v := mk()
		err := agent.DecodeArgs(raw, v)
		if err != nil {
			var ae *agent.ArgError
			if !asArgErr(err, &ae) {
				t.Fatalf("decode error is not an ArgError: %v", err)
			}
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		v2 := mk()
		if err := agent.DecodeArgs(b, v2); err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip changed %+v to %+v", v, v2)
		}
	})
}

func asArgErr(err error, target **agent.ArgError) bool {
	ae, ok := err.(*agent.ArgError)
	*target = ae
	return ok
}
