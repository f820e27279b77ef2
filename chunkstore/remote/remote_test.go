package remote_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/internal/wire"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/chunkstore/journal/journaltest"
	"github.com/zosproject/zos/chunkstore/remote"
	"github.com/zosproject/zos/chunkstore/shard"
	"github.com/zosproject/zos/chunkstore/shardtest"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/loopback"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/remote")

var secret = []byte("test-cluster-secret-0123456789")

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// server starts a disk store and a shard server on <lo><host>.
func server(t *testing.T, host int, cfg shard.Config) (*shard.Server, *disk.Store) {
	t.Helper()
	return serverAt(t, host, cfg, nil)
}

// serverAt is server with the disk store's clock (nil: time.Now).
func serverAt(t *testing.T, host int, cfg shard.Config, now func() time.Time) (*shard.Server, *disk.Store) {
	t.Helper()
	st, err := disk.Open(disk.Config{Dir: "/s", FS: vfs.NewMem(), CompactInterval: -1, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = fmt.Sprintf("%s%d:0", lo, host)
	cfg.Secret = secret
	cfg.Store = st
	srv, err := shard.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return srv, st
}

func client(t *testing.T, addr string, cfg remote.Config) *remote.Client {
	t.Helper()
	cfg.Addr = addr
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	c, err := remote.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chunkstore.Store {
		srv, _ := server(t, 2, shard.Config{Registry: prometheus.NewRegistry()})
		return client(t, srv.Addr().String(), remote.Config{}).Chunks()
	})
}

// TestShardConformance: a Client passes the ShardStore suite against a
// shard server over a disk store.
func TestShardConformance(t *testing.T) {
	shardtest.Run(t, func(t *testing.T, now func() time.Time) chunkstore.ShardStore {
		srv, _ := serverAt(t, 3, shard.Config{}, now)
		return client(t, srv.Addr().String(), remote.Config{})
	})
}

var shards = shardtest.Shards

// TestStatsAndPing: the client reports its server's store counters, and
// pings.
func TestStatsAndPing(t *testing.T) {
	srv, st := server(t, 3, shard.Config{})
	c := client(t, srv.Addr().String(), remote.Config{})
	if err := c.PutShards(ctx(t), append(shards(1, 3<<20, chunkstore.Profile{K: 2, M: 1}), shards(2, 100, chunkstore.Profile{K: 4, M: 2})...)); err != nil {
		t.Fatal(err)
	}
	stats, err := c.ShardStats(ctx(t))
	if err != nil || stats.Shards != 9 || stats != st.Stats() {
		t.Fatalf("stats %+v vs %+v, %v", stats, st.Stats(), err)
	}
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestPipelining: many concurrent requests on one connection, and a Get
// batch larger than one frame streams back.
func TestPipelining(t *testing.T) {
	srv, _ := server(t, 4, shard.Config{})
	c := client(t, srv.Addr().String(), remote.Config{Conns: 1})
	var all []chunkstore.Shard
	for i := range 40 {
		all = append(all, shards(uint64(i), 1<<20, chunkstore.Profile{K: 1, M: 1})...)
	}
	if err := c.PutShards(ctx(t), all); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Go(func() {
			sh := all[w%len(all)]
			res, err := c.GetShards(ctx(t), []chunkstore.ShardKey{sh.Key})
			if err == nil && (res[0].Err != nil || !bytes.Equal(res[0].Shard.Data, sh.Data)) {
				err = fmt.Errorf("worker %d: %v", w, res[0].Err)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	keys := make([]chunkstore.ShardKey, len(all))
	for i, sh := range all {
		keys[i] = sh.Key
	}
	res, err := c.GetShards(ctx(t), keys) // 80 MiB in one request
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || !bytes.Equal(r.Shard.Data, all[i].Data) {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
}

func TestWrongSecret(t *testing.T) {
	srv, _ := server(t, 5, shard.Config{})
	bad := client(t, srv.Addr().String(), remote.Config{Secret: []byte("not-the-cluster-secret!")})
	if err := bad.Ping(ctx(t)); !errors.Is(err, remote.ErrAuth) {
		t.Fatalf("wrong secret: %v, want ErrAuth", err)
	}
	good := client(t, srv.Addr().String(), remote.Config{})
	if err := good.Ping(ctx(t)); err != nil {
		t.Fatalf("server broken after a bad client: %v", err)
	}
}

// expectClosed reads from c until the server closes it.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: server did not close the connection", what)
	}
}

func TestGarbagePeers(t *testing.T) {
	srv, _ := server(t, 6, shard.Config{FrameTimeout: time.Second, HandshakeTimeout: time.Second})
	addr := srv.Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// Not the protocol at all.
	c := dial()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: shard\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
	expectClosed(t, c, "http request")
	// Silent after connecting: the handshake times out.
	expectClosed(t, dial(), "silent peer")
	// Authenticated, then garbage frames.
	for name, junk := range map[string][]byte{
		"huge frame":      {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0},
		"response type":   {5, 0, 0, 0, wire.TypeOK, 1, 0, 0, 0},
		"bad put payload": {9, 0, 0, 0, wire.TypePut, 1, 0, 0, 0, 9, 9, 9, 9},
		"half a frame":    {200, 0, 0, 0, wire.TypeGet},
	} {
		c := dial()
		if err := wire.ClientHandshake(c, secret); err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		expectClosed(t, c, name)
	}
	// A request type of a newer protocol is refused alone: an Error
	// frame for it, and the connection still serves.
	c = dial()
	if err := wire.ClientHandshake(c, secret); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteFrameTo(c, 0x40, 7, []byte("future")); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteFrameTo(c, wire.TypePing, 8); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	for _, want := range []struct {
		typ byte
		id  uint32
	}{{wire.TypeError, 7}, {wire.TypeOK, 8}} {
		f, _, err := wire.ReadFrame(c, nil)
		if err != nil || f.Type != want.typ || f.ID != want.id {
			t.Fatalf("after an unknown request type: frame %+v, %v; want type %#x id %d", f, err, want.typ, want.id)
		}
		if f.Type == wire.TypeError && !errors.Is(wire.DecodeError(f.Payload), wire.ErrRemote) {
			t.Fatalf("unknown request type answered with %v", wire.DecodeError(f.Payload))
		}
	}
	c.Close()
	// The server still serves.
	if err := client(t, addr, remote.Config{}).Ping(ctx(t)); err != nil {
		t.Fatalf("server broken after garbage: %v", err)
	}
}

// fakeServer accepts connections and runs fn on each after a correct
// handshake.
func fakeServer(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", lo+"7:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				if wire.ServerHandshake(c, secret) != nil {
					return
				}
				fn(c, bufio.NewReader(c))
			})
		}
	})
	return ln.Addr().String()
}

// TestHungServer: a server that answers half a frame and then hangs; the
// client errors after its timeout instead of hanging.
func TestHungServer(t *testing.T) {
	addr := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		f, _, err := wire.ReadFrame(br, nil)
		if err != nil {
			return
		}
		// Start a GetItem frame that promises 1 MiB and send 10 bytes.
		w := bufio.NewWriter(c)
		w.Write([]byte{0, 0, 16, 0, wire.TypeGetItem, byte(f.ID), byte(f.ID >> 8), 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
		w.Flush()
		io.Copy(io.Discard, c) // hang until closed
	})
	c := client(t, addr, remote.Config{RequestTimeout: 500 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		_, err := c.GetShards(context.Background(), []chunkstore.ShardKey{{Ref: chunkstore.Sum(nil), Index: chunkstore.AnyIndex}})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, chunkstore.ErrUnavailable) {
			t.Fatalf("hung server: %v, want ErrUnavailable", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("client hung on a stalled server")
	}
	// A server that never finishes the handshake: the dial times out.
	ln, err := net.Listen("tcp", lo+"7:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c2 := client(t, ln.Addr().String(), remote.Config{DialTimeout: 300 * time.Millisecond})
	if err := c2.Ping(context.Background()); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("silent server: %v", err)
	}
	// A cancelled context returns promptly even with a hung server.
	cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c3 := client(t, addr, remote.Config{RequestTimeout: time.Hour})
	if _, err := c3.StatShards(cctx, []chunkstore.ShardKey{{Ref: chunkstore.Sum(nil)}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled call on a hung server: %v", err)
	}
}

// TestGarbageServer: a server that answers with garbage; the client gets a
// clear error, not a crash.
func TestGarbageServer(t *testing.T) {
	addr := fakeServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := wire.ReadFrame(br, nil); err != nil {
			return
		}
		c.Write([]byte{7, 0, 0, 0, 0x42, 1, 0, 0, 0, 0xde, 0xad})
		io.Copy(io.Discard, c)
	})
	c := client(t, addr, remote.Config{RequestTimeout: 5 * time.Second})
	if _, err := c.EnumerateShards(ctx(t), chunkstore.ShardKey{}, 10); err == nil {
		t.Fatal("garbage answer accepted")
	}
}

// TestReconnect: the client survives the server restarting on its address.
func TestReconnect(t *testing.T) {
	st, err := disk.Open(disk.Config{Dir: "/s", FS: vfs.NewMem(), CompactInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := shard.Start(shard.Config{Addr: lo + "8:0", Secret: secret, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	c := client(t, addr, remote.Config{})
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := c.Ping(ctx(t)); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("ping of a stopped server: %v", err)
	}
	srv, err = shard.Start(shard.Config{Addr: addr, Secret: secret, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// A refused connection sets no backoff: the first call after the
	// restart reaches the server.
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatalf("first call after the restart: %v", err)
	}
}

// A server that accepts but never completes the handshake (hung) puts the
// client in a dial backoff: calls fail fast. Retry ends it at once, so the
// first call after the server is known to be back reaches it.
func TestRetryEndsBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", lo+"9:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var hung []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			hung = append(hung, c)
			mu.Unlock()
		}
	}()
	pool := remote.NewPool(remote.Config{Secret: secret, DialTimeout: 100 * time.Millisecond})
	defer pool.Close()
	c, err := pool.Get(addr)
	if err != nil {
		t.Fatal(err)
	}
	// Calls for 1.5 s: handshakes time out at about 0.1, 0.3, 0.7 and
	// 1.1 s, the last setting a backoff of 0.8 s.
	st, err := disk.Open(disk.Config{Dir: "/s", FS: vfs.NewMem(), CompactInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		c.Ping(ctx(t))
		time.Sleep(5 * time.Millisecond)
	}
	ln.Close()
	mu.Lock()
	for _, h := range hung {
		h.Close()
	}
	mu.Unlock()
	srv, err := shard.Start(shard.Config{Addr: addr, Secret: secret, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := c.Ping(ctx(t)); err == nil {
		t.Fatal("the client did not back off after failed handshakes (the test proves nothing)")
	}
	pool.Retry(addr)
	if err := c.Ping(ctx(t)); err != nil {
		t.Fatalf("first call after Retry: %v", err)
	}
}

// journalServer starts a shard server whose node keeps its journals in a
// journal.Dir.
func journalServer(t *testing.T, host int, reg *prometheus.Registry) (*shard.Server, *journal.Dir) {
	t.Helper()
	d, err := journal.OpenDir(journal.DirConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	srv, _ := server(t, host, shard.Config{Journal: d, Registry: reg})
	return srv, d
}

func jrec(epoch, seq uint64, n int) journal.Record {
	return journal.Record{Epoch: epoch, Seq: seq, Payload: storetest.Data(epoch<<32|seq, n)}
}

func sameRecords(t *testing.T, got []journal.Record, want ...journal.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Epoch != want[i].Epoch || got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("record %d is %d/%d (%d bytes), want %d/%d (%d bytes)", i, got[i].Epoch, got[i].Seq, len(got[i].Payload),
				want[i].Epoch, want[i].Seq, len(want[i].Payload))
		}
	}
}

// TestJournal: a Client is the journal.Log of its server's node.
func TestJournal(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, dir := journalServer(t, 9, reg)
	var c journal.Log = client(t, srv.Addr().String(), remote.Config{})
	ctx := ctx(t)
	recs, err := c.Read(ctx, "vd", 0)
	if err != nil || len(recs) != 0 {
		t.Fatalf("read of a journal never written: %v %v", recs, err)
	}
	// 12 MiB: larger than a frame the server reads in one go.
	a, b, big := jrec(2, 1, 100), jrec(2, 2, 0), jrec(2, 3, 12<<20)
	if err := c.Append(ctx, "vd", 2, []journal.Record{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := c.Append(ctx, "vd", 2, []journal.Record{big}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Read(ctx, "vd", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, a, b, big)
	// The server's Dir has them too (it is the same journal).
	local, err := dir.Read(ctx, "vd", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, local, a, b, big)

	// Sealing fences older epochs, and the client sees ErrFenced.
	if _, err := c.Read(ctx, "vd", 3); err != nil {
		t.Fatal(err)
	}
	err = c.Append(ctx, "vd", 2, []journal.Record{jrec(2, 4, 10)})
	if !errors.Is(err, journal.ErrFenced) || !strings.Contains(err.Error(), "sealed at epoch 3") {
		t.Fatalf("append below the seal: %v", err)
	}
	c3 := jrec(3, 1, 10)
	if err := c.Append(ctx, "vd", 3, []journal.Record{c3}); err != nil {
		t.Fatal(err)
	}
	if err := c.Trim(ctx, "vd", 2, 3); err != nil {
		t.Fatal(err)
	}
	got, err = c.Read(ctx, "vd", 0)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, c3) // the 12 MiB prefix was worth a rewrite
	if err := c.Trim(ctx, "vd", journal.All, journal.All); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(ctx, "vd", 0); err != nil || len(got) != 0 {
		t.Fatalf("after Trim(All, All): %d records, %v", len(got), err)
	}
	// Bad input is refused (here, before it is sent).
	if err := c.Append(ctx, "", 1, []journal.Record{jrec(1, 1, 1)}); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("empty name: %v", err)
	}
	// The requests are counted under their own op names.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "zos_shard_server_requests_total" {
			for _, m := range mf.GetMetric() {
				ops[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if ops["jappend"] != 4 || ops["jread"] != 5 || ops["jtrim"] != 2 {
		t.Fatalf("request counts %v", ops)
	}
}

// TestJournalConformance: a Client passes the journal suite against a
// shard server whose node keeps its journals in a Dir; a restart stops
// the server and the Dir and starts both again over the same directory.
func TestJournalConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) journaltest.Harness {
		jdir := t.TempDir()
		var srv *shard.Server
		var d *journal.Dir
		var c *remote.Client
		start := func(t *testing.T) journal.Log {
			var err error
			if d, err = journal.OpenDir(journal.DirConfig{Dir: jdir, NoSync: true}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			srv, _ = server(t, 12, shard.Config{Journal: d})
			c = client(t, srv.Addr().String(), remote.Config{})
			return c
		}
		return journaltest.Harness{Log: start(t), Restart: func(t *testing.T, crash func(vfs.FS, string)) journal.Log {
			c.Close()
			srv.Close()
			d.Close()
			if crash != nil {
				crash(vfs.Default, jdir)
			}
			return start(t)
		}}
	})
}

// TestJournalErrorsCrossTheWire: a server-side journal's ErrInvalid,
// ErrFull, ErrFenced and ErrSyncFailed reach the client as themselves.
func TestJournalErrorsCrossTheWire(t *testing.T) {
	for _, sentinel := range []error{journal.ErrInvalid, journal.ErrFull, journal.ErrFenced, journal.ErrSyncFailed} {
		srv, _ := server(t, 10, shard.Config{Journal: failingLog{fmt.Errorf("%w: as told", sentinel)}})
		c := client(t, srv.Addr().String(), remote.Config{})
		if _, err := c.Read(ctx(t), "vd", 1); !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "as told") {
			t.Fatalf("%v: got %v", sentinel, err)
		}
	}
}

type failingLog struct{ err error }

func (f failingLog) Append(context.Context, string, uint64, []journal.Record) error { return f.err }
func (f failingLog) Read(context.Context, string, uint64) ([]journal.Record, error) {
	return nil, f.err
}
func (f failingLog) Trim(context.Context, string, uint64, uint64) error { return f.err }

// TestNoJournal: a server without a journal answers journal requests with
// a clear error and keeps the connection.
func TestNoJournal(t *testing.T) {
	srv, _ := server(t, 11, shard.Config{})
	c := client(t, srv.Addr().String(), remote.Config{})
	ctx := ctx(t)
	err := c.Append(ctx, "vd", 1, []journal.Record{jrec(1, 1, 10)})
	if !errors.Is(err, wire.ErrRemote) || !strings.Contains(err.Error(), "keeps no journal") {
		t.Fatalf("append: %v", err)
	}
	if _, err := c.Read(ctx, "vd", 1); err == nil || !strings.Contains(err.Error(), "keeps no journal") {
		t.Fatalf("read: %v", err)
	}
	if err := c.Trim(ctx, "vd", 1, 1); err == nil || !strings.Contains(err.Error(), "keeps no journal") {
		t.Fatalf("trim: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("the connection did not survive: %v", err)
	}
}
