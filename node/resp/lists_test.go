package resp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func startListServer(t *testing.T, kc KeyspaceConfig) (*Keyspace, string) {
	t.Helper()
	k := NewKeyspace(kc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Auth: func(tok string) bool { return tok == "secret" }, Handlers: ListHandlers(k)})
	go s.Serve(context.Background(), ln)
	t.Cleanup(func() { s.Close(); k.Close() })
	return k, ln.Addr().String()
}

func client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: "secret", Protocol: 2, ReadTimeout: -1})
}

func TestListCommands(t *testing.T) {
	k, addr := startListServer(t, KeyspaceConfig{})
	ctx := context.Background()
	c := client(addr)
	defer c.Close()
	if n, err := c.RPush(ctx, "l", "a", "b", "c").Result(); err != nil || n != 3 {
		t.Fatalf("rpush = %d %v", n, err)
	}
	if vs, _ := c.LRange(ctx, "l", 0, -1).Result(); strings.Join(vs, ",") != "a,b,c" {
		t.Fatalf("lrange = %v", vs)
	}
	if vs, _ := c.LRange(ctx, "l", -2, 10).Result(); strings.Join(vs, ",") != "b,c" {
		t.Fatalf("lrange -2 = %v", vs)
	}
	if n, _ := c.LLen(ctx, "l").Result(); n != 3 {
		t.Fatalf("llen = %d", n)
	}
	if d, _ := c.TTL(ctx, "l").Result(); d != -1 {
		t.Fatalf("ttl without expiry = %v", d)
	}
	if ok, _ := c.Expire(ctx, "l", 100*time.Second).Result(); !ok {
		t.Fatal("expire on existing key = false")
	}
	if d, _ := c.TTL(ctx, "l").Result(); d <= 90*time.Second || d > 100*time.Second {
		t.Fatalf("ttl = %v", d)
	}
	if n, _ := c.Exists(ctx, "l", "nope").Result(); n != 1 {
		t.Fatalf("exists = %d", n)
	}
	if n, _ := c.Do(ctx, "LKEYEXISTS", "l").Int(); n != 1 {
		t.Fatalf("lkeyexists = %d", n)
	}
	if v, _ := c.BLPop(ctx, time.Second, "nope", "l").Result(); strings.Join(v, ",") != "l,a" {
		t.Fatalf("blpop = %v", v)
	}
	if v, _ := cliBRPopLPush(c, ctx, "l", "l", time.Second); v != "c" {
		t.Fatalf("brpoplpush = %v", v)
	}
	if vs, _ := c.LRange(ctx, "l", 0, -1).Result(); strings.Join(vs, ",") != "c,b" {
		t.Fatalf("after rotation = %v", vs)
	}
	if n, _ := c.Del(ctx, "l", "x").Result(); n != 1 {
		t.Fatalf("del = %d", n)
	}
	if d, _ := c.TTL(ctx, "l").Result(); d != -2 {
		t.Fatalf("ttl of deleted = %v", d)
	}
	// Expiry removes the key.
	c.RPush(ctx, "e", "x")
	c.Expire(ctx, "e", time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for c.Exists(ctx, "e").Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("key did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if k.Bytes() != 0 {
		t.Fatalf("keyspace holds %d bytes after everything was removed", k.Bytes())
	}
	// Wrong arguments are errors, not crashes.
	for _, args := range [][]any{{"blpop", "k", "x"}, {"brpoplpush", "a", "b", "-1"}, {"lrange", "a", "x", "1"}, {"expire", "a", "b"}, {"rpush", "a"}} {
		if err := c.Do(ctx, args...).Err(); err == nil || !strings.HasPrefix(err.Error(), "ERR") {
			t.Errorf("%v = %v, want ERR", args, err)
		}
	}
}

func TestBlockingPops(t *testing.T) {
	k, addr := startListServer(t, KeyspaceConfig{})
	ctx := context.Background()
	// A blocked BLPOP wakes on a push.
	got := make(chan []string, 1)
	c := client(addr)
	defer c.Close()
	go func() { v, _ := c.BLPop(ctx, 0, "q").Result(); got <- v }()
	waitWaiters(t, k, "q", 1)
	p := client(addr)
	defer p.Close()
	p.RPush(ctx, "q", "hello")
	select {
	case v := <-got:
		if strings.Join(v, ",") != "q,hello" {
			t.Fatalf("blpop = %v", v)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blpop not woken by rpush")
	}
	// A timeout answers nil.
	if err := c.BLPop(ctx, 100*time.Millisecond, "q").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("timed-out blpop = %v", err)
	}
	// Several readers of one result all see it (BRPOPLPUSH k k).
	var wg sync.WaitGroup
	res := make(chan string, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := client(addr)
			defer r.Close()
			v, err := cliBRPopLPush(r, ctx, "result:x", "result:x", 30*time.Second)
			if err != nil {
				v = err.Error()
			}
			res <- v
		}()
	}
	waitWaiters(t, k, "result:x", 4)
	p.RPush(ctx, "result:x", "R")
	wg.Wait()
	close(res)
	for v := range res {
		if v != "R" {
			t.Fatalf("reader saw %q", v)
		}
	}
	if n := p.LLen(ctx, "result:x").Val(); n != 1 {
		t.Fatalf("result list holds %d after the readers", n)
	}
	// A client that hangs up while blocked is no longer a waiter, and the
	// next push is not lost to it.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(nc, "AUTH secret\r\nBLPOP gone 0\r\n")
	waitWaiters(t, k, "gone", 1)
	nc.Close()
	waitWaiters(t, k, "gone", 0)
	p.RPush(ctx, "gone", "kept")
	if v := p.LRange(ctx, "gone", 0, -1).Val(); strings.Join(v, ",") != "kept" {
		t.Fatalf("after disconnect: %v", v)
	}
}

func waitWaiters(t *testing.T, k *Keyspace, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k.mu.Lock()
		got := len(k.waiters[key])
		k.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters on %s, want %d", got, key, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBounds(t *testing.T) {
	k, addr := startListServer(t, KeyspaceConfig{MaxListBytes: 1000, MaxBytes: 1500})
	ctx := context.Background()
	c := client(addr)
	defer c.Close()
	if err := c.RPush(ctx, "a", strings.Repeat("x", 900)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.RPush(ctx, "a", strings.Repeat("x", 200)).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("over list bound = %v", err)
	}
	if err := c.RPush(ctx, "b", strings.Repeat("x", 700)).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("over total bound = %v", err)
	}
	if k.Bytes() != 900+keyOverhead+len("a") {
		t.Fatalf("bytes = %d", k.Bytes())
	}
	// Expiring keys make room; keys without a TTL stay.
	c.Expire(ctx, "a", time.Hour)
	if err := c.RPush(ctx, "b", strings.Repeat("x", 700)).Err(); err != nil {
		t.Fatalf("push with an expiring key to evict: %v", err)
	}
	if c.Exists(ctx, "a").Val() != 0 || k.Evicted() != 1 {
		t.Fatalf("expiring key not evicted (evicted %d)", k.Evicted())
	}
	if err := c.RPush(ctx, "c", strings.Repeat("x", 700)).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("over total bound without expiring keys = %v", err)
	}
	// A 1 GiB bulk string is refused before it is read or allocated.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(nc, "*3\r\n$5\r\nRPUSH\r\n$12\r\ncore:default\r\n$%d\r\n", 1<<30)
	b, _ := io.ReadAll(nc)
	if !strings.HasPrefix(string(b), "-ERR Protocol error: invalid bulk length") {
		t.Fatalf("1 GiB body -> %q", b)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

// cliBRPopLPush sends BRPOPLPUSH as 0-core clients do (go-redis marks its
// helper deprecated in favour of BLMOVE).
func cliBRPopLPush(c *redis.Client, ctx context.Context, src, dst string, timeout time.Duration) (string, error) {
	return c.Do(ctx, "BRPOPLPUSH", src, dst, timeout.Seconds()).Text()
}

// FuzzServer feeds arbitrary bytes to a connection of a server with the
// list commands: it must answer or close, never panic, and keep serving.
func FuzzServer(f *testing.F) {
	for _, s := range []string{
		"AUTH secret\r\nRPUSH a x y\r\nLRANGE a 0 -1\r\nBLPOP a 0.01\r\n",
		"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n*4\r\n$10\r\nBRPOPLPUSH\r\n$1\r\na\r\n$1\r\na\r\n$4\r\n0.01\r\n",
		"AUTH secret\r\nEXPIRE a 10\r\nTTL a\r\nDEL a b\r\nEXISTS a\r\nLLEN a\r\nLPOP a\r\n",
		"AUTH secret\r\nBLPOP a b -1\r\nEXPIRE a 99999999999999999999\r\nLRANGE a x y\r\n",
		"*1\r\n$-1\r\n", "*3\r\n$5\r\nRPUSH\r\n$1\r\na\r\n$1073741824\r\n",
	} {
		f.Add([]byte(s))
	}
	k := NewKeyspace(KeyspaceConfig{MaxListBytes: 1 << 16, MaxBytes: 1 << 20})
	defer k.Close()
	s := New(Config{Auth: func(tok string) bool { return tok == "secret" }, Handlers: ListHandlers(k)})
	f.Fuzz(func(t *testing.T, in []byte) {
		cli, srv := net.Pipe()
		s.mu.Lock()
		s.conns[srv] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(context.Background(), srv)
		cli.SetDeadline(time.Now().Add(10 * time.Second))
		go cli.Write(in)
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, cli); close(done) }()
		// Hang up after the input: a blocked pop must give up.
		time.Sleep(2 * time.Millisecond)
		cli.Close()
		<-done
	})
}
