package nbd_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/internal/wire"
	client "github.com/zosproject/zos/blockd/nbd/nbdclient"
)

// BenchmarkPipelined drives the server with the Go test client keeping
// `depth` requests in flight on one connection, against the anchor
// `nbdkit memory` driven by the same client in the same run (run with
// -bench Pipelined -benchtime 2s; compare the zos and nbdkit lines).
func BenchmarkPipelined(b *testing.B) {
	const size = 256 << 20
	targets := map[string]string{}
	ts := startServer(b, nbd.Config{})
	ts.addMem(b, "bench", size, nbd.ExportInfo{MultiConn: true})
	targets["zos"] = ts.addr
	if path, err := exec.LookPath("nbdkit"); err == nil {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, path, "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", port, "memory", strconv.Itoa(size))
		if err := cmd.Start(); err == nil {
			b.Cleanup(func() { cancel(); cmd.Wait() })
			for i := 0; i < 500; i++ {
				if c, err := net.Dial("tcp", addr); err == nil {
					c.Close()
					targets["nbdkit"] = addr
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		} else {
			cancel()
		}
	}
	for _, job := range []struct {
		name  string
		typ   uint16
		bs    uint32
		depth int
	}{
		{"read4k-qd1", wire.CmdRead, 4096, 1},
		{"write4k-qd32", wire.CmdWrite, 4096, 32},
		{"read4k-qd32", wire.CmdRead, 4096, 32},
		{"read1m-qd8", wire.CmdRead, 1 << 20, 8},
		{"write1m-qd8", wire.CmdWrite, 1 << 20, 8},
	} {
		for _, name := range []string{"zos", "nbdkit"} {
			addr, ok := targets[name]
			if !ok {
				continue
			}
			b.Run(fmt.Sprintf("%s/%s", job.name, name), func(b *testing.B) {
				exportName := "bench"
				if name == "nbdkit" {
					exportName = ""
				}
				c, err := client.Dial(addr, client.Options{Export: exportName, Structured: true})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				payload := pattern(int(job.bs), 1)
				send := func(i int) {
					off := uint64(i*7919) % (size / uint64(job.bs)) * uint64(job.bs)
					var p []byte
					if job.typ == wire.CmdWrite {
						p = payload
					}
					if _, err := c.Send(wire.Request{Type: job.typ, Offset: off, Length: job.bs}, p); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(job.bs))
				b.ReportAllocs()
				b.ResetTimer()
				inflight := 0
				for i := 0; i < b.N; i++ {
					if inflight == job.depth {
						if rep, err := c.Recv(); err != nil || rep.Err != nil {
							b.Fatal(err, rep)
						}
						inflight--
					}
					send(i)
					inflight++
				}
				for ; inflight > 0; inflight-- {
					if _, err := c.Recv(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
