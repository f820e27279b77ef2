package flistbench

import (
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosproject/zos/flist"
)

// upgradedPair copies up to limit bytes of regular files of root into
// version A, and makes version B from A as an upgrade would: every 10th
// file patched (100 bytes inserted in its middle), every 25th removed, and
// a new file of an eighth of A's bytes, at most 1 MiB (A is 1.9 MiB when
// the tests' Debian tree is not there yet and busybox stands in). Symlinks are kept; other special files skipped.
func upgradedPair(t testing.TB, root string, limit int64) (a, b string) {
	t.Helper()
	a, b = t.TempDir(), t.TempDir()
	var total int64
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable: skip
		}
		rel, _ := filepath.Rel(root, p)
		pa, pb := filepath.Join(a, rel), filepath.Join(b, rel)
		switch {
		case d.IsDir():
			if total >= limit {
				return filepath.SkipDir
			}
			if err := os.MkdirAll(pa, 0o755); err != nil {
				return err
			}
			return os.MkdirAll(pb, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return nil
			}
			os.Symlink(target, pa)
			os.Symlink(target, pb)
			return nil
		case !d.Type().IsRegular() || total >= limit:
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		total += int64(len(data))
		n++
		if err := os.WriteFile(pa, data, 0o644); err != nil {
			return err
		}
		switch {
		case n%25 == 0:
			return nil // removed in B
		case n%10 == 0:
			mid := len(data) / 2
			data = append(append(append([]byte{}, data[:mid]...), strings.Repeat("upgrade!!!", 10)...), data[mid:]...)
		}
		return os.WriteFile(pb, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	extra := make([]byte, min(1<<20, max(64<<10, int(total/8))))
	for i := range extra {
		extra[i] = byte(r.Uint32())
	}
	if err := writeFile(filepath.Join(b, "new-in-b"), "added.bin", extra); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestDedupRootfs: two versions of a root file system (the tests' Debian
// tree or busybox, 48 MiB of it, and an upgrade of it) share most of their
// chunks: with the default content-defined chunking B adds little once A
// is stored, and no more than fixed chunking makes it add.
func TestDedupRootfs(t *testing.T) {
	root, _ := benchRoot(t)
	a, b := upgradedPair(t, root, 48<<20)
	rs, err := Dedup(context.Background(), a, b, []flist.Chunking{flist.FixedChunking(1 << 20), flist.DefaultChunking})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + DedupReport(rs))
	fixed, cdc := rs[0], rs[1]
	for _, r := range rs {
		if r.BytesA == 0 || r.Stored < max(r.BytesA, r.BytesB) || r.Stored > r.BytesA+r.BytesB {
			t.Errorf("%s: inconsistent result %+v", r.Chunking, r)
		}
	}
	if cdc.ExtraForB > cdc.BytesA/4 {
		t.Errorf("%s: the upgrade adds %d bytes to the %d of A", cdc.Chunking, cdc.ExtraForB, cdc.BytesA)
	}
	if cdc.ExtraForB > fixed.ExtraForB {
		t.Errorf("content-defined chunking stores more of the upgrade (%d bytes) than fixed chunking (%d)", cdc.ExtraForB, fixed.ExtraForB)
	}
}

// BenchmarkDedupRootfs reports, per chunking, what an upgrade of the
// tests' root file system adds once the original is stored. Set
// ZOS_DEDUP_A and ZOS_DEDUP_B to compare two real versions instead (e.g. a
// debootstrap tree and the same after apt-get upgrade).
//
//	go test -run=^$ -bench=DedupRootfs -benchtime=1x ./bench/flistbench/
func BenchmarkDedupRootfs(b *testing.B) {
	va, vb := os.Getenv("ZOS_DEDUP_A"), os.Getenv("ZOS_DEDUP_B")
	if va == "" || vb == "" {
		root, _ := benchRoot(b)
		va, vb = upgradedPair(b, root, 1<<40)
	}
	for range b.N {
		rs, err := Dedup(context.Background(), va, vb, Chunkings)
		if err != nil {
			b.Fatal(err)
		}
		b.Log("\n" + DedupReport(rs))
		for _, r := range rs {
			b.ReportMetric(r.Ratio, r.Chunking+"-ratio")
			b.ReportMetric(mib(r.ExtraForB), r.Chunking+"-B-adds-MiB")
		}
	}
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
