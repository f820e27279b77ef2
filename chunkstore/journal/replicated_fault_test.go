package journal_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/internal/faultfs"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/chunkstore/journal/journaltest"
)

// TestReplicatedSyncFailure: a holder whose fdatasync fails (EIO) is
// routed around like an unreachable node, whether the writer reaches it
// directly or over the shard protocol: the append is acknowledged by the
// other holder and the next node of the ranking, and so are later appends
// (the failed journal refuses them with ErrSyncFailed); a Read returns
// every acknowledged record.
func TestReplicatedSyncFailure(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "remote"}[direct], func(t *testing.T) {
			ffs := make([]*faultfs.FS, 3)
			c := startClusterFS(t, 3, false, func(i int) vfs.FS {
				ffs[i] = faultfs.Wrap(vfs.Default)
				return ffs[i]
			})
			r := c.replicated(2)
			ctx := testCtx(t)
			// A name whose copies go to node 0 (reached directly) and one
			// reached over the protocol.
			var name string
			var holders []int
			for i := 0; ; i++ {
				name = fmt.Sprintf("vd-%d", i)
				if holders = c.holders(name, 2); slices.Contains(holders, 0) {
					break
				}
			}
			bad := holders[0]
			if (bad == 0) != direct {
				bad = holders[1]
			}
			spare := 3 - holders[0] - holders[1]
			a, b, d := rec(1, 1, 100), rec(1, 2, 200), rec(1, 3, 300)
			if err := r.Append(ctx, name, 1, []journal.Record{a}); err != nil {
				t.Fatal(err)
			}
			ffs[bad].Inject(faultfs.Rule{Op: faultfs.Sync, PathContains: journaltest.JournalFile(vfs.Default, c.nodes[bad].jdir, name), Times: 1})
			if err := r.Append(ctx, name, 1, []journal.Record{b}); err != nil {
				t.Fatalf("append with a holder's fdatasync failing: %v", err)
			}
			if ffs[bad].Hits() != 1 {
				t.Fatalf("%d faults fired, want 1", ffs[bad].Hits())
			}
			if err := r.Append(ctx, name, 1, []journal.Record{d}); err != nil {
				t.Fatalf("append after a holder's fdatasync failed: %v", err)
			}
			err := c.nodes[bad].dir.Append(ctx, name, 1, []journal.Record{rec(1, 4, 1)})
			if !errors.Is(err, journal.ErrSyncFailed) || !errors.Is(err, chunkstore.ErrUnavailable) {
				t.Fatalf("the failed holder's journal: %v, want ErrSyncFailed", err)
			}
			for _, x := range []journal.Record{b, d} {
				if !c.has(t, spare, name, x.Epoch, x.Seq) {
					t.Fatalf("record %d/%d is not on the spare node %d", x.Epoch, x.Seq, spare)
				}
			}
			got, err := r.Read(ctx, name, 0)
			if err != nil {
				t.Fatal(err)
			}
			journaltest.Same(t, got, a, b, d)
		})
	}
}
