package journal_test

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/chunkstore/journal/journaltest"
)

// dirHarness is a Dir over fs at dir, restarted by closing and reopening.
func dirHarness(t *testing.T, fs vfs.FS, dir string) journaltest.Harness {
	open := func(t *testing.T) *journal.Dir {
		d, err := journal.OpenDir(journal.DirConfig{Dir: dir, FS: fs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	cur := open(t)
	return journaltest.Harness{Log: cur, Restart: func(t *testing.T, crash func(vfs.FS, string)) journal.Log {
		cur.Close()
		if crash != nil {
			crash(fs, dir)
		}
		cur = open(t)
		return cur
	}}
}

// TestDirConformance: a Dir passes the journal suite on the OS file system
// and on pebble's memory file system.
func TestDirConformance(t *testing.T) {
	t.Run("OS", func(t *testing.T) {
		journaltest.Run(t, func(t *testing.T) journaltest.Harness { return dirHarness(t, vfs.Default, t.TempDir()) })
	})
	t.Run("Mem", func(t *testing.T) {
		journaltest.Run(t, func(t *testing.T) journaltest.Harness { return dirHarness(t, vfs.NewMem(), "/j") })
	})
}

// TestReplicatedConformance: a Replicated journal (2 copies over 3 nodes,
// one reached directly and two over the shard protocol) passes the journal
// suite; a restart stops and restarts every node.
func TestReplicatedConformance(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) journaltest.Harness {
		c := startCluster(t, 3, true)
		return journaltest.Harness{Log: c.replicated(2), Restart: func(t *testing.T, crash func(vfs.FS, string)) journal.Log {
			for i := range c.nodes {
				c.stop(i)
			}
			for _, nd := range c.nodes {
				if crash != nil {
					crash(vfs.Default, nd.jdir)
				}
			}
			for i := range c.nodes {
				c.restart(i)
			}
			return c.replicated(2)
		}}
	})
}

// TestDirConcurrent: 12 journals written at once by 4 writers each, through
// a Dir that keeps at most 3 files open.
func TestDirConcurrent(t *testing.T) {
	d, err := journal.OpenDir(journal.DirConfig{Dir: t.TempDir(), NoSync: true, MaxOpen: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	journaltest.Concurrent(t, d, 12)
	if open := d.OpenFiles(); open > 3 {
		t.Fatalf("%d files open, MaxOpen is 3", open)
	}
}
