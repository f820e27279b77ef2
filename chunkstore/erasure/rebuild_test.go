package erasure

import (
	"bytes"
	"errors"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// TestRebuild: for every set of up to m lost positions, Rebuild gives the
// lost shards exactly as Encode made them, and refuses a wrong Ref.
func TestRebuild(t *testing.T) {
	c := NewCodec()
	for _, p := range []chunkstore.Profile{{K: 4, M: 2}, {K: 2, M: 1}, {K: 1, M: 2}, {K: 3, M: 0}} {
		for _, size := range []int{1, 5000, 1<<20 + 3, 4 << 20} {
			d := storetest.Data(uint64(size), size)
			ref := chunkstore.Sum(d)
			all, err := c.Encode(p, d)
			if err != nil {
				t.Fatal(err)
			}
			n := p.N()
			for mask := 0; mask < 1<<n; mask++ {
				var lost []int
				shards := make([][]byte, n)
				for i := range n {
					if mask&(1<<i) != 0 {
						lost = append(lost, i)
					} else {
						shards[i] = all[i]
					}
				}
				if len(lost) > int(p.M) {
					continue
				}
				out, release, err := c.Rebuild(p, size, shards, ref, lost)
				if p.M == 0 && len(lost) > 0 {
					if !errors.Is(err, errNoShortcut) {
						t.Fatalf("%s without parity, lost %v: %v", p, lost, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s, %d bytes, lost %v: %v", p, size, lost, err)
				}
				for _, i := range lost {
					if !bytes.Equal(out[i], all[i]) {
						t.Fatalf("%s, %d bytes, lost %v: shard %d differs", p, size, lost, i)
					}
				}
				release()
				if len(lost) > 0 {
					if _, _, err := c.Rebuild(p, size, shards, chunkstore.Sum([]byte("other")), lost); !chunkstore.IsCorruption(err) {
						t.Fatalf("wrong ref: %v", err)
					}
				}
			}
		}
	}
	// A data shard whose padding is not zero cannot be used in place.
	p := chunkstore.Profile{K: 4, M: 2}
	d := storetest.Data(9, 1000001)
	all, _ := c.Encode(p, d)
	dirty := bytes.Clone(all[3])
	dirty[len(dirty)-1] = 1
	shards := [][]byte{all[0], all[1], all[2], dirty, all[4], nil}
	if _, _, err := c.Rebuild(p, len(d), shards, chunkstore.Sum(d), []int{5}); !errors.Is(err, errNoShortcut) {
		t.Fatalf("dirty padding: %v", err)
	}
	// Too few shards.
	if _, _, err := c.Rebuild(p, len(d), [][]byte{all[0], nil, nil, nil, all[4], nil}, chunkstore.Sum(d), []int{1}); !chunkstore.IsTransient(err) {
		t.Fatalf("too few: %v", err)
	}
}
