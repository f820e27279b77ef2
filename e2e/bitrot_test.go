package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/node"
)

// corruptSegments flips bytes inside the shard segment files of a node
// (skipping the first KiB of each file) and returns how many it changed.
func corruptSegments(t *testing.T, dir string, every int64) int {
	n := 0
	filepath.Walk(filepath.Join(dir, "shards"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || info.Size() < 64<<10 || strings.Contains(p, "index") {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil
		}
		defer f.Close()
		for off := int64(1 << 10); off < info.Size(); off += every {
			b := make([]byte, 1)
			f.ReadAt(b, off)
			b[0] ^= 0x5a
			f.WriteAt(b, off)
			n++
		}
		return nil
	})
	return n
}

// TestBitrot overwrites bytes inside the stored shards of a node: reads
// still return correct data, `zos store scrub` reports and repairs the
// corrupted shards, and a second scrub finds nothing.
func TestBitrot(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{})
	files := writeRandomFiles(t, t.TempDir(), 30<<20)
	for _, f := range files {
		out, err := c.CLI(0, "store", "put", f.path)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		f.ref = lines[len(lines)-1]
	}
	// Rot n2's disk while it is down (so no cache hides it), then start it.
	c.Stop(1)
	flipped := corruptSegments(t, c.Nodes[1].Dir, 1<<20)
	if flipped == 0 {
		t.Fatal("found no segment files to corrupt")
	}
	t.Logf("flipped %d bytes in n2's segments", flipped)
	c.Restart(1)
	c.WaitReady(1, 60e9)

	scrub := func() []node.ScrubResult {
		out, err := c.CLI(0, "store", "scrub", "-o", "json")
		if err != nil {
			t.Fatalf("store scrub: %v\n%s", err, out)
		}
		var res []node.ScrubResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return res
	}
	var corrupt, repaired int64
	for _, r := range scrub() {
		if r.Error != "" || r.Unrepairable != 0 {
			t.Fatalf("scrub of %s: %+v", r.Node, r)
		}
		corrupt += r.Corrupt
		repaired += r.Repaired
	}
	t.Logf("scrub: %d corrupt, %d repaired", corrupt, repaired)
	if corrupt == 0 || repaired != corrupt {
		t.Fatalf("scrub found %d corrupt shards and repaired %d; %d bytes were flipped", corrupt, repaired, flipped)
	}
	for _, r := range scrub() {
		if r.Corrupt != 0 {
			t.Fatalf("second scrub of %s still finds %d corrupt shards", r.Node, r.Corrupt)
		}
	}
	// Reads are correct, and every chunk is healthy again.
	readAll(t, c, 1, files)
	for _, f := range files {
		var st node.BlobStatus
		if err := c.Get(t.Context(), 0, "/api/v1/store/blobs/"+f.ref+"/stat", &st); err != nil {
			t.Fatal(err)
		}
		if st.Degraded+st.Unreadable != 0 {
			t.Fatalf("%s after scrub: %d degraded, %d unreadable", f.path, st.Degraded, st.Unreadable)
		}
	}
	readAll(t, c, 1, files)
}
