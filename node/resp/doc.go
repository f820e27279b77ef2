// Package resp is the node's Redis-protocol (RESP2) endpoint, the wire of
// 0-core: a stock redis client (redis-cli, go-redis) connects to port 6379,
// authenticates with AUTH <token>, and sends commands. This package is the
// protocol and the connection handling — a strict, bounded RESP2 reader
// (arrays of bulk strings and inline commands), a reply writer, AUTH and the
// connection commands (PING, ECHO, SELECT, QUIT, HELLO 2) — with a table of
// command handlers, and the Keyspace the node agent keeps 0-core's lists in
// (ListHandlers serves it: RPUSH, BLPOP, BRPOPLPUSH, LRANGE, LLEN, EXPIRE,
// TTL, EXISTS, DEL …). The keyspace is bounded per list and in total
// (expiring keys are evicted first when full), expires keys from a heap,
// and wakes blocked pops oldest first; a blocked client that hangs up
// stops waiting.
//
// Bad input never crashes the server: an oversized or malformed request
// gets a protocol error reply and the connection is closed, as Redis does.
package resp
