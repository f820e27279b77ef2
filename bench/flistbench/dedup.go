package flistbench

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
)

// countingStore is a Receiver that keeps only the Refs and sizes it saw.
type countingStore struct {
	mu   sync.Mutex
	seen map[chunkstore.Ref]int64
}

func (c *countingStore) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	ref := chunkstore.Sum(data)
	c.mu.Lock()
	c.seen[ref] = int64(len(data))
	c.mu.Unlock()
	return ref, nil
}

func (c *countingStore) bytes() (n int64, chunks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.seen {
		n += s
	}
	return n, len(c.seen)
}

// DedupResult is what storing two versions of a tree costs with one
// chunking.
type DedupResult struct {
	Chunking   string
	BytesA     int64   // unique chunk bytes of version A alone
	BytesB     int64   // unique chunk bytes of version B alone
	Stored     int64   // unique chunk bytes of A and B together
	Ratio      float64 // Stored / (BytesA + BytesB): lower is better
	ExtraForB  int64   // what B adds once A is stored
	ChunksA    int
	AvgChunk   int64 // average chunk size of A
	FlistBytes int64 // size of A's flist file
}

// Dedup builds two versions of a tree (directories or archives) with each
// chunking and reports the bytes the chunk store would hold.
func Dedup(ctx context.Context, a, b string, chunkings []flist.Chunking) ([]DedupResult, error) {
	var out []DedupResult
	for _, ch := range chunkings {
		build := func(src string, st *countingStore) (*flist.Tree, error) {
			t, _, err := flist.Build(ctx, src, &flist.Options{Store: st, Chunking: ch, AllowDevices: true, Concurrency: 2})
			return t, err
		}
		sa := &countingStore{seen: map[chunkstore.Ref]int64{}}
		ta, err := build(a, sa)
		if err != nil {
			return nil, err
		}
		sb := &countingStore{seen: map[chunkstore.Ref]int64{}}
		if _, err := build(b, sb); err != nil {
			return nil, err
		}
		both := &countingStore{seen: map[chunkstore.Ref]int64{}}
		for r, s := range sa.seen {
			both.seen[r] = s
		}
		for r, s := range sb.seen {
			both.seen[r] = s
		}
		var fb countWriter
		if _, err := ta.Write(&fb); err != nil {
			return nil, err
		}
		ba, ca := sa.bytes()
		bb, _ := sb.bytes()
		st, _ := both.bytes()
		r := DedupResult{Chunking: ch.Name(), BytesA: ba, BytesB: bb, Stored: st, ExtraForB: st - ba, ChunksA: ca, FlistBytes: int64(fb)}
		if ba+bb > 0 {
			r.Ratio = float64(st) / float64(ba+bb)
		}
		if ca > 0 {
			r.AvgChunk = ba / int64(ca)
		}
		out = append(out, r)
	}
	return out, nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// DedupReport formats results as a table.
func DedupReport(rs []DedupResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %10s %10s %10s %7s %10s %8s %9s\n", "chunking", "A MiB", "B MiB", "A+B MiB", "ratio", "B adds MiB", "chunks", "avg KiB")
	for _, r := range rs {
		fmt.Fprintf(&b, "%-22s %10.1f %10.1f %10.1f %7.3f %10.1f %8d %9.0f\n", r.Chunking, mib(r.BytesA), mib(r.BytesB), mib(r.Stored), r.Ratio, mib(r.ExtraForB), r.ChunksA, float64(r.AvgChunk)/1024)
	}
	return b.String()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// Chunkings compared by default.
var Chunkings = []flist.Chunking{
	flist.FixedChunking(256 << 10),
	flist.FixedChunking(1 << 20),
	flist.FixedChunking(4 << 20),
	{Kind: "fastcdc", Min: 64 << 10, Avg: 256 << 10, Max: 1 << 20},
	flist.DefaultChunking,
	{Kind: "fastcdc", Min: 1 << 20, Avg: 2 << 20, Max: 4 << 20},
}

// MakeShiftedPair writes two versions of a directory holding one large
// file (size bytes of pseudo-random data) where version B has 100 bytes
// inserted in the middle: the case where content-defined chunking matters.
func MakeShiftedPair(dirA, dirB string, size int) error {
	data := make([]byte, size)
	x := uint64(42)
	for i := range data {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		data[i] = byte(x)
	}
	if err := writeFile(dirA, "big.db", data); err != nil {
		return err
	}
	mid := size / 2
	b := append(append(append([]byte{}, data[:mid]...), []byte(strings.Repeat("inserted!!", 10))...), data[mid:]...)
	return writeFile(dirB, "big.db", b)
}
