package nbd_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/nbd/internal/wire"
	client "github.com/zosproject/zos/blockd/nbd/nbdclient"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// expectClosed reads from nc until the server closes it.
func expectClosed(t *testing.T, what string, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: server did not close the connection", what)
	}
}

// Garbage of every kind closes the offending connection; a well-behaved
// client doing I/O all along is not disturbed, and nothing leaks.
func TestMalformedInput(t *testing.T) {
	ts := startServer(t, nbd.Config{HandshakeTimeout: 2 * time.Second})
	ts.addMem(t, "d", 16*mib, nbd.ExportInfo{})

	good := ts.dial(t, client.Options{Export: "d", Structured: true})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var goodErr error
	var goodOps int
	go func() {
		defer wg.Done()
		p := pattern(65536, 5)
		for {
			select {
			case <-stop:
				return
			default:
			}
			off := uint64(goodOps%200) * 65536
			if err := good.Write(off, p, 0); err != nil {
				goodErr = err
				return
			}
			got, err := good.Read(off, 65536)
			if err != nil || string(got) != string(p) {
				goodErr = err
				if err == nil {
					goodErr = io.ErrUnexpectedEOF
				}
				return
			}
			goodOps++
		}
	}()

	dialRaw := func() (net.Conn, *bufio.Reader) {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc, bufio.NewReader(nc)
	}
	// enter returns a raw connection in transmission on "d".
	enter := func(structured bool) (net.Conn, *bufio.Reader) {
		nc, br := dialRaw()
		if _, err := client.Hello(nc, br, wire.ClientFlagFixedNewstyle); err != nil {
			t.Fatal(err)
		}
		if structured {
			rs, err := client.Option(nc, br, wire.OptStructuredReply, nil)
			if err != nil || client.Final(wire.OptStructuredReply, rs) != nil {
				t.Fatal(err)
			}
		}
		rs, err := client.Option(nc, br, wire.OptGo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "d"}))
		if err != nil || client.Final(wire.OptGo, rs) != nil {
			t.Fatal(err, rs)
		}
		return nc, br
	}

	t.Run("unknown client flags", func(t *testing.T) {
		nc, br := dialRaw()
		client.Hello(nc, br, 0xff)
		expectClosed(t, "client flags 0xff", nc)
	})
	t.Run("bad option magic", func(t *testing.T) {
		nc, br := dialRaw()
		client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
		nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		expectClosed(t, "HTTP request", nc)
	})
	t.Run("option data beyond limit", func(t *testing.T) {
		nc, br := dialRaw()
		client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
		h := binary.BigEndian.AppendUint64(nil, wire.MagicOption)
		h = binary.BigEndian.AppendUint32(h, wire.OptGo)
		h = binary.BigEndian.AppendUint32(h, 0xffffffff)
		nc.Write(h)
		expectClosed(t, "4 GiB option", nc)
	})
	t.Run("export name too long", func(t *testing.T) {
		nc, br := dialRaw()
		client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
		nc.Write(wire.AppendOption(nil, wire.OptExportName, make([]byte, 5000)))
		expectClosed(t, "5000-byte export name", nc)
	})
	t.Run("silent client times out", func(t *testing.T) {
		nc, _ := dialRaw()
		expectClosed(t, "silent client", nc)
	})
	t.Run("hangup mid option", func(t *testing.T) {
		nc, br := dialRaw()
		client.Hello(nc, br, wire.ClientFlagFixedNewstyle)
		nc.Write(wire.AppendOption(nil, wire.OptGo, wire.AppendInfoRequest(nil, wire.InfoRequest{Name: "d"}))[:20])
		nc.Close()
	})
	t.Run("bad request magic", func(t *testing.T) {
		nc, _ := enter(false)
		b := wire.AppendRequest(nil, wire.Request{Type: wire.CmdRead, Length: 512})
		b[0] = 0x12
		nc.Write(b)
		expectClosed(t, "bad request magic", nc)
	})
	t.Run("garbage after handshake", func(t *testing.T) {
		nc, _ := enter(true)
		nc.Write([]byte("\x00\x01garbage garbage garbage garbage garbage"))
		expectClosed(t, "garbage", nc)
	})
	t.Run("hangup mid header", func(t *testing.T) {
		nc, _ := enter(false)
		nc.Write(wire.AppendRequest(nil, wire.Request{Type: wire.CmdRead, Length: 512})[:13])
		nc.Close()
	})
	t.Run("hangup mid payload", func(t *testing.T) {
		nc, _ := enter(false)
		nc.Write(wire.AppendRequest(nil, wire.Request{Type: wire.CmdWrite, Length: mib}))
		nc.Write(make([]byte, mib/2))
		nc.Close()
	})
	t.Run("hangup with requests in flight", func(t *testing.T) {
		nc, _ := enter(true)
		for i := 0; i < 64; i++ {
			nc.Write(wire.AppendRequest(nil, wire.Request{Type: wire.CmdRead, Handle: uint64(i), Offset: uint64(i) * 4096, Length: 1 << 20}))
		}
		nc.Close()
	})
	t.Run("client never reads replies", func(t *testing.T) {
		nc, _ := enter(false)
		req := wire.AppendRequest(nil, wire.Request{Type: wire.CmdRead, Length: 8 * mib})
		// Far more reply data than socket buffers hold; the server must
		// stop reading (bounded memory), not grow without bound.
		go func() {
			for i := 0; i < 200; i++ {
				if _, err := nc.Write(req); err != nil {
					return
				}
			}
		}()
		time.Sleep(200 * time.Millisecond)
		nc.Close()
	})
	t.Run("disc with payload garbage after", func(t *testing.T) {
		nc, _ := enter(false)
		b := wire.AppendRequest(nil, wire.Request{Type: wire.CmdDisc})
		nc.Write(append(b, "trailing junk"...))
		expectClosed(t, "after DISC", nc)
	})

	close(stop)
	wg.Wait()
	if goodErr != nil {
		t.Fatalf("well-behaved client failed during the abuse: %v", goodErr)
	}
	if goodOps == 0 {
		t.Fatal("well-behaved client made no progress")
	}
	// After the abuse the server still accepts and serves.
	c := ts.dial(t, client.Options{Export: "d"})
	if err := c.Write(0, []byte("still alive"), wire.CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "abusive connections to close", func() bool { return ts.metric(t, "zos_nbd_connections") == 2 })
	_ = context.Background
}
