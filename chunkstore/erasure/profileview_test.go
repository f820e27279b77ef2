package erasure_test

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
)

// TestWithProfile: a view writes with its own profile (a pool's, or k+0
// for cache data) and the store reads the chunk whatever its profile.
func TestWithProfile(t *testing.T) {
	c := start(t, localcluster6())
	for _, p := range []chunkstore.Profile{{K: 3, M: 0}, {K: 2, M: 1}, {K: 4, M: 2}} {
		v, err := c.Store.WithProfile(p)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 100<<10)
		rand.Read(data)
		ref, err := v.Put(ctx(t), data)
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Store.Inspect(ctx(t), ref)
		if err != nil {
			t.Fatal(err)
		}
		if st.Profile != p || len(st.Shards) != p.N() {
			t.Fatalf("written with %v, inspect says %v (%d shards)", p, st.Profile, len(st.Shards))
		}
		got, err := c.Store.Fetch(ctx(t), ref)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch of a %v chunk: %v", p, err)
		}
	}
	if _, err := c.Store.WithProfile(chunkstore.Profile{}); err == nil {
		t.Fatal("zero profile accepted")
	}
}

func localcluster6() localcluster.Config {
	return localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}}
}
