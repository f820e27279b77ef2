package nbd_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/internal/wire"
	"github.com/zosproject/zos/blockd/nbd/memexport"
)

var (
	fuzzOnce sync.Once
	fuzzSrv  *nbd.Server
)

func fuzzServer() *nbd.Server {
	fuzzOnce.Do(func() {
		ex := nbd.NewStaticExports()
		ex.Add(memexport.MustNew(1<<20, memexport.Options{PageSize: 4096}), nbd.ExportInfo{Name: "", MultiConn: true})
		ex.Add(memexport.MustNew(64<<10, memexport.Options{}), nbd.ExportInfo{Name: "ro", ReadOnly: true})
		srv, err := nbd.New(nbd.Config{
			Exports:          ex,
			Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
			HandshakeTimeout: 5 * time.Second,
			MaxRequestSize:   1 << 20,
		})
		if err != nil {
			panic(err)
		}
		fuzzSrv = srv
	})
	return fuzzSrv
}

// clientStream builds a plausible client byte stream: flags, options,
// then requests.
func clientStream(cflags uint32, opts [][2]any, reqs []wire.Request) []byte {
	b := binary.BigEndian.AppendUint32(nil, cflags)
	for _, o := range opts {
		b = wire.AppendOption(b, o[0].(uint32), o[1].([]byte))
	}
	for _, r := range reqs {
		b = wire.AppendRequest(b, r)
		if r.Type == wire.CmdWrite {
			b = append(b, make([]byte, r.Length)...)
		}
	}
	return b
}

// FuzzNegotiation feeds arbitrary client bytes to a server over net.Pipe:
// the server must neither panic nor hang, whatever the stream (the option
// haggling, the switch to transmission and the request decoder are all
// reached by the seeds).
func FuzzNegotiation(f *testing.F) {
	meta := wire.AppendMetaContextRequest(nil, wire.MetaContextRequest{Queries: []string{"base:allocation"}})
	goData := wire.AppendInfoRequest(nil, wire.InfoRequest{Infos: []uint16{wire.InfoName, wire.InfoBlockSize}})
	f.Add(clientStream(1, [][2]any{{wire.OptList, []byte{}}, {wire.OptAbort, []byte{}}}, nil))
	f.Add(clientStream(3, [][2]any{{wire.OptExportName, []byte{}}},
		[]wire.Request{{Type: wire.CmdWrite, Length: 512}, {Type: wire.CmdRead, Length: 512}, {Type: wire.CmdDisc}}))
	f.Add(clientStream(1, [][2]any{
		{wire.OptStructuredReply, []byte{}},
		{wire.OptListMetaContext, meta},
		{wire.OptSetMetaContext, meta},
		{wire.OptInfo, goData},
		{wire.OptGo, goData},
	}, []wire.Request{
		{Type: wire.CmdBlockStatus, Length: 1 << 20, Flags: wire.CmdFlagReqOne},
		{Type: wire.CmdWriteZeroes, Offset: 4096, Length: 8192, Flags: wire.CmdFlagFastZero | wire.CmdFlagNoHole},
		{Type: wire.CmdRead, Offset: 4000, Length: 20000, Flags: wire.CmdFlagDF},
		{Type: wire.CmdTrim, Length: 4096, Flags: wire.CmdFlagFUA},
		{Type: wire.CmdCache, Length: 4096},
		{Type: wire.CmdFlush},
		{Type: wire.CmdRead, Offset: 1 << 20, Length: 1},
		{Type: wire.CmdWrite, Offset: 0, Length: 0},
		{Type: 42, Length: 9},
		{Type: wire.CmdDisc},
	}))
	f.Add(clientStream(1, [][2]any{{wire.OptGo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "ro"})}},
		[]wire.Request{{Type: wire.CmdWrite, Length: 100}, {Type: wire.CmdTrim, Length: 10}}))
	f.Add(clientStream(1, [][2]any{{wire.OptStartTLS, []byte{}}, {wire.OptInfo, []byte{0, 0, 0, 200}}, {uint32(99), []byte("x")}}, nil))
	f.Add([]byte{0, 0, 0, 1, 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})

	srv := fuzzServer()
	f.Fuzz(func(t *testing.T, stream []byte) {
		cli, sv := net.Pipe()
		done := make(chan struct{})
		go func() {
			srv.ServeConn(context.Background(), sv)
			close(done)
		}()
		go io.Copy(io.Discard, cli) // drain replies
		cli.SetWriteDeadline(time.Now().Add(10 * time.Second))
		cli.Write(stream)
		cli.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("server did not finish the connection for stream %x", stream)
		}
	})
}
