package resp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{
		Auth: func(tok string) bool { return tok == "secret" },
		Handlers: map[string]Handler{
			"UPPER": func(ctx context.Context, c *Conn, args [][]byte) {
				c.W.Bulk(bytes.ToUpper(args[1]))
			},
			"BOOM": func(ctx context.Context, c *Conn, args [][]byte) { panic("boom") },
		},
	})
	go s.Serve(context.Background(), ln)
	t.Cleanup(func() { s.Close() })
	return s, ln.Addr().String()
}

func TestRedisCLI(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli missing: scripts/deps.sh test installs redis-tools")
	}
	_, addr := startServer(t)
	host, port, _ := net.SplitHostPort(addr)
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := cli("PING"); got != "PONG" {
		t.Fatalf("PING = %q", got)
	}
	if got := cli("ECHO", "x"); !strings.Contains(got, "NOAUTH") {
		t.Fatalf("unauthenticated ECHO = %q", got)
	}
	if got := cli("-a", "secret", "--no-auth-warning", "UPPER", "hello world"); got != "HELLO WORLD" {
		t.Fatalf("UPPER = %q", got)
	}
	if got := cli("-a", "wrong", "--no-auth-warning", "PING"); !strings.Contains(got, "WRONGPASS") && !strings.Contains(got, "AUTH failed") {
		t.Fatalf("wrong password = %q", got)
	}
	if got := cli("-a", "secret", "--no-auth-warning", "NOSUCH", "a"); !strings.Contains(got, "unknown command 'NOSUCH'") {
		t.Fatalf("unknown = %q", got)
	}
}

func TestGoRedis(t *testing.T) {
	_, addr := startServer(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: "secret", Protocol: 2})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	v, err := c.Do(ctx, "upper", "abc").Text()
	if err != nil || v != "ABC" {
		t.Fatalf("upper = %q, %v", v, err)
	}
	// A panicking handler answers an error; the connection and server live on.
	if err := c.Do(ctx, "boom").Err(); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("boom = %v", err)
	}
	// Pipelining.
	p := c.Pipeline()
	for i := 0; i < 100; i++ {
		p.Do(ctx, "upper", "x")
	}
	cmds, err := p.Exec(ctx)
	if err != nil || len(cmds) != 100 {
		t.Fatalf("pipeline: %v", err)
	}
	bad := redis.NewClient(&redis.Options{Addr: addr, Password: "nope", Protocol: 2})
	defer bad.Close()
	if err := bad.Ping(ctx).Err(); err == nil {
		t.Fatal("wrong password accepted")
	}
}

func TestGarbage(t *testing.T) {
	_, addr := startServer(t)
	for _, in := range []string{"*2\r\n$-5\r\n", "*1\r\n:3\r\n", "*99999999\r\n", "*1\r\n$3\r\nabcXY", "\"unbalanced\r\n", "*1\r\n$100000000\r\n"} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		nc.Write([]byte(in))
		b, _ := io.ReadAll(nc)
		nc.Close()
		if !strings.HasPrefix(string(b), "-ERR Protocol error") {
			t.Errorf("%q -> %q, want a protocol error and close", in, b)
		}
	}
	// The server still serves.
	c := redis.NewClient(&redis.Options{Addr: addr, Password: "secret", Protocol: 2})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestInline(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("SET k \"a b\\n\" 'c d'\r\nPING\n"))
	args, err := ReadCommand(r)
	if err != nil || len(args) != 4 || string(args[2]) != "a b\n" || string(args[3]) != "c d" {
		t.Fatalf("%q %v", args, err)
	}
	args, err = ReadCommand(r)
	if err != nil || len(args) != 1 || string(args[0]) != "PING" {
		t.Fatalf("%q %v", args, err)
	}
	if _, err := ReadCommand(r); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "PING\r\n", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "\"a\\\"b\" c\n", "*-1\r\n", "*1\r\n$0\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for i := 0; i < 100; i++ {
			args, err := ReadCommand(r)
			if err != nil {
				return
			}
			total := 0
			for _, a := range args {
				total += len(a)
			}
			if total > len(b) {
				t.Fatalf("decoded %d bytes of arguments from %d bytes of input", total, len(b))
			}
		}
	})
}
