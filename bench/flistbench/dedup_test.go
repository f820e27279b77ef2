package flistbench

import (
	"context"
	"os"

	"github.com/zosproject/zos/flist"
	"testing"
)

// TestDedupRootfs prints the dedup table for two root file system versions
// given by ZOS_DEDUP_A and ZOS_DEDUP_B (e.g. a debootstrap tree and the same
// after apt-get upgrade).
func TestDedupRootfs(t *testing.T) {
	a, b := os.Getenv("ZOS_DEDUP_A"), os.Getenv("ZOS_DEDUP_B")
	if a == "" || b == "" {
		t.Skip("set ZOS_DEDUP_A and ZOS_DEDUP_B to two root file system versions")
	}
	rs, err := Dedup(context.Background(), a, b, Chunkings)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + DedupReport(rs))
}

func TestDedupShiftedFile(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := MakeShiftedPair(a, b, 64<<20); err != nil {
		t.Fatal(err)
	}
	rs, err := Dedup(context.Background(), a, b, Chunkings)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + DedupReport(rs))
	for _, r := range rs {
		// Content-defined chunking must re-store only a few chunks around
		// the insertion; fixed chunking re-stores everything after it.
		if r.Chunking == flist.DefaultChunking.Name() && r.ExtraForB > 12<<20 {
			t.Errorf("fastcdc: an insertion costs %d bytes", r.ExtraForB)
		}
	}
}
