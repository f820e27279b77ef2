package journal

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore/internal/faultfs"
)

// TestDirSyncFailure: an append whose fdatasync fails (EIO) fails, and the
// journal then refuses appends instead of acknowledging them over a file
// whose dirty pages the kernel may have dropped (fsyncgate), until the
// directory is reopened or Trim(All, All) removes the journal. Other
// journals and reads go on.
func TestDirSyncFailure(t *testing.T) {
	mem := vfs.NewMem()
	ffs := faultfs.Wrap(mem)
	d := openDir(t, "/j", DirConfig{FS: ffs})
	ctx := testCtx(t)
	a, b, c := rec(1, 1, 100), rec(1, 2, 100), rec(1, 3, 100)
	mustAppend(t, d, "vd", a)
	mustAppend(t, d, "other", a)
	ffs.Inject(faultfs.Rule{Op: faultfs.Sync, PathContains: journalPath("/j", "vd"), Times: 1})
	if err := d.Append(ctx, "vd", 1, []Record{b}); !errors.Is(err, faultfs.ErrInjected) {
		t.Fatalf("append with a failing fdatasync: %v, want EIO", err)
	}
	if ffs.Hits() != 1 {
		t.Fatalf("%d faults fired, want 1", ffs.Hits())
	}
	// The sync would succeed now; the Dir must not take that as durable.
	if err := d.Append(ctx, "vd", 1, []Record{c}); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("append after a failed fdatasync: %v, want ErrSyncFailed", err)
	}
	// Acknowledged records are still read (b, never acknowledged, may be).
	got, err := d.Read(ctx, "vd", 0)
	if err != nil || len(got) < 1 || got[0].Seq != 1 {
		t.Fatalf("read after a failed append: %s, %v", keys(got), err)
	}
	mustAppend(t, d, "other", b)

	// Trim(All, All) drops the journal and the refusal with it.
	mustAppend(t, d, "trimmed", a)
	ffs.Inject(faultfs.Rule{Op: faultfs.Sync, PathContains: journalPath("/j", "trimmed"), Times: 1})
	if err := d.Append(ctx, "trimmed", 1, []Record{b}); err == nil {
		t.Fatal("append with a failing fdatasync succeeded")
	}
	if err := d.Trim(ctx, "trimmed", All, All); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, d, "trimmed", c)
	want(t, d, "trimmed", 0, c)

	// Reopening reads the file again, checking every frame: appends go on.
	d.Close()
	d = openDir(t, "/j", DirConfig{FS: ffs})
	mustAppend(t, d, "vd", c)
	got, err = d.Read(ctx, "vd", 0)
	if err != nil || len(got) < 2 || got[0].Seq != 1 || got[len(got)-1].Seq != 3 {
		t.Fatalf("read after reopening: %s, %v", keys(got), err)
	}
	want(t, d, "other", 0, a, b)
}

// TestDirWriteFailure: a failed (short) write fails the append and the
// journal refuses appends like after a failed fdatasync; after a reopen the
// torn frame is cut and appends go on.
func TestDirWriteFailure(t *testing.T) {
	ffs := faultfs.Wrap(vfs.NewMem())
	d := openDir(t, "/j", DirConfig{FS: ffs})
	ctx := testCtx(t)
	a, b, c := rec(1, 1, 100), rec(1, 2, 5000), rec(1, 3, 100)
	mustAppend(t, d, "vd", a)
	ffs.Inject(faultfs.Rule{Op: faultfs.Write, PathContains: journalPath("/j", "vd"), Short: true, Times: 1})
	if err := d.Append(ctx, "vd", 1, []Record{b}); !errors.Is(err, faultfs.ErrInjected) {
		t.Fatalf("append with a failing write: %v", err)
	}
	if err := d.Append(ctx, "vd", 1, []Record{c}); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("append after a failed write: %v, want ErrSyncFailed", err)
	}
	d.Close()
	d = openDir(t, "/j", DirConfig{FS: ffs})
	want(t, d, "vd", 0, a)
	mustAppend(t, d, "vd", c)
	want(t, d, "vd", 0, a, c)
}
