package resp

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// ListHandlers returns the handlers of the list and keyspace commands
// served from k: RPUSH, LPUSH, LPOP, BLPOP, BRPOPLPUSH, LRANGE, LLEN,
// EXPIRE, PERSIST, TTL, EXISTS, DEL, and 0-core's LKEYEXISTS and LTTL
// (its Python client uses them on result:<id>:flag).
func ListHandlers(k *Keyspace) map[string]Handler {
	return map[string]Handler{
		"RPUSH":      func(ctx context.Context, c *Conn, a [][]byte) { push(k, c, a, false) },
		"LPUSH":      func(ctx context.Context, c *Conn, a [][]byte) { push(k, c, a, true) },
		"LPOP":       func(ctx context.Context, c *Conn, a [][]byte) { lpop(k, c, a) },
		"BLPOP":      func(ctx context.Context, c *Conn, a [][]byte) { blpop(ctx, k, c, a) },
		"BRPOPLPUSH": func(ctx context.Context, c *Conn, a [][]byte) { brpoplpush(ctx, k, c, a) },
		"LRANGE":     func(ctx context.Context, c *Conn, a [][]byte) { lrange(k, c, a) },
		"LLEN": func(ctx context.Context, c *Conn, a [][]byte) {
			if arity(c, a, 2) {
				c.W.Int(int64(k.LLen(string(a[1]))))
			}
		},
		"EXPIRE": func(ctx context.Context, c *Conn, a [][]byte) { expire(k, c, a) },
		"PERSIST": func(ctx context.Context, c *Conn, a [][]byte) {
			if arity(c, a, 2) {
				c.W.Int(b2i(k.Persist(string(a[1]))))
			}
		},
		"TTL":        func(ctx context.Context, c *Conn, a [][]byte) { ttl(k, c, a) },
		"LTTL":       func(ctx context.Context, c *Conn, a [][]byte) { ttl(k, c, a) },
		"EXISTS":     func(ctx context.Context, c *Conn, a [][]byte) { exists(k, c, a) },
		"LKEYEXISTS": func(ctx context.Context, c *Conn, a [][]byte) { exists(k, c, a) },
		"DEL": func(ctx context.Context, c *Conn, a [][]byte) {
			if len(a) < 2 {
				wrongArgs(c, a)
				return
			}
			var n int64
			for _, key := range a[1:] {
				n += b2i(k.Del(string(key)))
			}
			c.W.Int(n)
		},
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func wrongArgs(c *Conn, a [][]byte) {
	c.W.Error("ERR wrong number of arguments for '" + strings.ToLower(printable(a[0])) + "' command")
}

func arity(c *Conn, a [][]byte, n int) bool {
	if len(a) != n {
		wrongArgs(c, a)
		return false
	}
	return true
}

func keyErr(c *Conn, err error) {
	if errors.Is(err, ErrFull) {
		c.W.Error("OOM " + err.Error())
		return
	}
	c.W.Error("ERR " + err.Error())
}

func push(k *Keyspace, c *Conn, a [][]byte, left bool) {
	if len(a) < 3 {
		wrongArgs(c, a)
		return
	}
	var n int
	var err error
	n, err = k.pushOwned(string(a[1]), a[2:], left)
	if err != nil {
		keyErr(c, err)
		return
	}
	c.W.Int(int64(n))
}

func lpop(k *Keyspace, c *Conn, a [][]byte) {
	if !arity(c, a, 2) {
		return
	}
	if v, ok := k.LPop(string(a[1])); ok {
		c.W.Bulk(v)
	} else {
		c.W.Null()
	}
}

// parseTimeout reads a blocking timeout in seconds (a float, as Redis 6).
func parseTimeout(c *Conn, b []byte) (time.Duration, bool) {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		c.W.Error("ERR timeout is not a float or out of range")
		return 0, false
	}
	if f < 0 {
		c.W.Error("ERR timeout is negative")
		return 0, false
	}
	if f > 1e9 {
		f = 1e9
	}
	return time.Duration(f * float64(time.Second)), true
}

func blpop(ctx context.Context, k *Keyspace, c *Conn, a [][]byte) {
	if len(a) < 3 {
		wrongArgs(c, a)
		return
	}
	timeout, ok := parseTimeout(c, a[len(a)-1])
	if !ok {
		return
	}
	keys := make([]string, 0, len(a)-2)
	for _, key := range a[1 : len(a)-1] {
		keys = append(keys, string(key))
	}
	ctx, stop := c.WatchDisconnect(ctx)
	key, v, ok, err := k.BLPop(ctx, timeout, keys...)
	stop()
	switch {
	case err != nil && ctx.Err() == nil:
		keyErr(c, err)
	case !ok:
		c.W.NullArray()
	default:
		c.W.Array(2)
		c.W.Bulk([]byte(key))
		c.W.Bulk(v)
	}
}

func brpoplpush(ctx context.Context, k *Keyspace, c *Conn, a [][]byte) {
	if !arity(c, a, 4) {
		return
	}
	timeout, ok := parseTimeout(c, a[3])
	if !ok {
		return
	}
	ctx, stop := c.WatchDisconnect(ctx)
	v, ok, err := k.BRPopLPush(ctx, timeout, string(a[1]), string(a[2]))
	stop()
	switch {
	case err != nil && ctx.Err() == nil:
		keyErr(c, err)
	case !ok:
		c.W.Null()
	default:
		c.W.Bulk(v)
	}
}

func lrange(k *Keyspace, c *Conn, a [][]byte) {
	if !arity(c, a, 4) {
		return
	}
	start, err1 := strconv.Atoi(string(a[2]))
	stop, err2 := strconv.Atoi(string(a[3]))
	if err1 != nil || err2 != nil {
		c.W.Error("ERR value is not an integer or out of range")
		return
	}
	vs := k.LRange(string(a[1]), start, stop)
	c.W.Array(len(vs))
	for _, v := range vs {
		c.W.Bulk(v)
	}
}

func expire(k *Keyspace, c *Conn, a [][]byte) {
	if !arity(c, a, 3) {
		return
	}
	s, err := strconv.ParseInt(string(a[2]), 10, 64)
	if err != nil || s > math.MaxInt64/int64(time.Second) || s < -math.MaxInt64/int64(time.Second) {
		c.W.Error("ERR value is not an integer or out of range")
		return
	}
	c.W.Int(b2i(k.Expire(string(a[1]), time.Duration(s)*time.Second)))
}

func ttl(k *Keyspace, c *Conn, a [][]byte) {
	if arity(c, a, 2) {
		c.W.Int(k.TTL(string(a[1])))
	}
}

func exists(k *Keyspace, c *Conn, a [][]byte) {
	if len(a) < 2 {
		wrongArgs(c, a)
		return
	}
	var n int64
	for _, key := range a[1:] {
		n += b2i(k.Exists(string(key)))
	}
	c.W.Int(n)
}
