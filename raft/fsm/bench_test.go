package fsm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
)

// BenchmarkApply measures one kv.put (and one batch of 64) as the raft
// package applies it — decode, apply, encode the result — with and
// without a request id, so the cost of the request table shows on its
// own. The table fills up to its bounds within the first iterations.
func BenchmarkApply(b *testing.B) {
	for _, batch := range []int{1, 64} {
		for _, withID := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/id=%v", batch, withID), func(b *testing.B) {
				s := NewState()
				init, _ := NewCommand(OpInit, 1, InitArgs{ClusterID: "c", Secret: "0123456789abcdef0123", Admin: Token{ID: "admin", Hash: hashOf("a")}})
				s.Apply(&init)
				var args any = KVPutArgs{NS: "bench", Key: "c1-17", Value: []byte("v")}
				op := OpKVPut
				if batch > 1 {
					cmds := make([]Command, batch)
					for j := range cmds {
						cmds[j], _ = NewCommand(OpKVPut, 0, KVPutArgs{NS: "bench", Key: fmt.Sprintf("c1-%d", j), Value: []byte("v")})
					}
					op, args = OpBatch, BatchArgs{Cmds: cmds}
				}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					c, _ := NewCommand(op, int64(i), args)
					if withID {
						c.ID, c.Seen = "n1.0123456789abcdef."+strconv.FormatUint(uint64(i), 36), s.Index
					}
					raw, _ := c.Encode()
					d, err := Decode(raw)
					if err != nil {
						b.Fatal(err)
					}
					s.Index++
					v, err := s.Apply(&d)
					if err != nil {
						b.Fatal(err)
					}
					if _, ok := v.(json.RawMessage); !ok {
						if _, err := json.Marshal(v); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
