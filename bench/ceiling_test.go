package bench

import (
	"strings"
	"testing"

	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/chunkstore"
)

// TestCeilingNotes: the ceilings are said, and each sequential write of
// zos beyond the write-back cache is given as a share of the disk's rate
// for new blocks (repeats too; not the within-caches size, nor anchors).
func TestCeilingNotes(t *testing.T) {
	c := nbdCeiling{profile: chunkstore.Profile{K: 2, M: 1}, fresh: 1048.576, overwrite: 2097.152, cpus: 2}
	jobs := []report.Job{
		{Name: "1m-seqwrite @ 512M", Results: []report.Result{{Target: report.Zos, MBps: 900}}},
		{Name: "1m-seqwrite @ 4G", Results: []report.Result{{Target: report.Zos, MBps: 524.288}, {Target: "qemu-nbd-raw", Anchor: true, MBps: 1000}}},
		{Name: "1m-seqwrite#2 @ 4G", Results: []report.Result{{Target: report.Zos, MBps: 262.144}}},
		{Name: "1m-seqread @ 4G", Results: []report.Result{{Target: report.Zos, MBps: 700}}},
	}
	got := strings.Join(c.notes(jobs, true, " @ 4G"), "\n")
	for _, want := range []string{"2 CPUs", "1000 MiB/s of guest data durably into new blocks", "2000 MiB/s over blocks written before", "2+1 shards: 3 files",
		"1m-seqwrite @ 4G on zos: 500 MiB/s, 50% of the disk's ceiling", "1m-seqwrite#2 @ 4G on zos: 250 MiB/s, 25%"} {
		if !strings.Contains(got, want) {
			t.Fatalf("no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "512M on zos") || strings.Contains(got, "seqread") || strings.Count(got, "\n") != 2 {
		t.Fatalf("notes for jobs within the caches or not writes:\n%s", got)
	}
	if n := c.notes(jobs, false, ""); len(n) != 1 {
		t.Fatalf("a size within the write-back cache got write notes: %v", n)
	}
}
