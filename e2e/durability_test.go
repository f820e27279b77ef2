package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd/nbdclient"
	"github.com/zosproject/zos/internal/testcluster"
)

// requireTools fails the test (not skips: CI installs them, see
// scripts/deps.sh) when a client program is missing.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is not installed (scripts/deps.sh test installs it): %v", n, err)
		}
	}
}

// flushCase is one cycle of TestFlushSurvivesKill: a client writes size
// bytes at off and flushes, then its node is killed.
type flushCase struct {
	tool string // qemu-io or fio
	off  int64
	size int64
	pat  byte // qemu-io's pattern
	job  string
}

func mib(n int64) int64 { return n << 20 }

// nbdURI names export name on node i of c.
func nbdURI(c *testcluster.Cluster, i int, name string) string {
	return "nbd://" + c.Nodes[i].IP + ":10809/" + name
}

// fioArgs is the fio job of a case: verify headers in every block, the
// workload of the case's kind, and a FLUSH at the end (end_fsync) that
// acknowledges all of it; fsync is a FLUSH every so many writes besides.
func (fc flushCase) fioArgs(uri string, verifyOnly bool) []string {
	args := []string{"--name=" + fc.job, "--ioengine=nbd", "--uri=" + uri, "--offset=" + fmt.Sprint(fc.off),
		"--size=" + fmt.Sprint(fc.size), "--verify=crc32c", "--randseed=" + fmt.Sprint(fc.off>>20),
		"--iodepth=16", "--end_fsync=1", "--verify_state_save=0", "--output-format=terse"}
	if fc.size <= mib(1) {
		args = append(args, "--rw=randwrite", "--bs=4k", "--fsync=64")
	} else {
		args = append(args, "--rw=write", "--bs=1M", "--fsync=16")
	}
	if verifyOnly {
		args = append(args, "--verify_only=1")
	}
	return args
}

// write runs the case's client against uri; nil means every byte was
// acknowledged by a FLUSH.
func (fc flushCase) write(ctx context.Context, uri string) (string, error) {
	if fc.tool == "fio" {
		return runCmd(ctx, "fio", fc.fioArgs(uri, false)...)
	}
	return runCmd(ctx, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P 0x%02x %d %d", fc.pat, fc.off, fc.size), "-c", "flush", uri)
}

// verify reads the case's range back through uri and checks it.
func (fc flushCase) verify(ctx context.Context, uri string) (string, error) {
	if fc.tool == "fio" {
		out, err := runCmd(ctx, "fio", fc.fioArgs(uri, true)...)
		if err == nil && strings.Contains(out, "verify:") {
			err = fmt.Errorf("fio reported a verify error")
		}
		return out, err
	}
	out, err := runCmd(ctx, "qemu-io", "-f", "raw", "-r", "-c", fmt.Sprintf("read -P 0x%02x %d %d", fc.pat, fc.off, fc.size), uri)
	if err == nil && strings.Contains(out, "Pattern verification failed") {
		err = fmt.Errorf("pattern verification failed")
	}
	return out, err
}

// unavailable reports whether a client failed only because the export
// cannot be opened yet (the killed writer's lease has not lapsed).
func unavailable(out string) bool {
	return strings.Contains(out, "not available") || strings.Contains(out, "attached read-write") || strings.Contains(out, "policy prevents") ||
		strings.Contains(out, "Connection refused") || strings.Contains(out, "failed to connect")
}

// retryClient runs fn until it succeeds or fails for a reason other than
// the export being unavailable, for up to two minutes.
func retryClient(t *testing.T, what string, fn func(ctx context.Context) (string, error)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		out, err := fn(ctx)
		cancel()
		if err == nil {
			return
		}
		if !unavailable(out) || time.Now().After(deadline) {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		t.Logf("%s: %v (retried: the export is not available yet)\n%s", what, err, out)
		time.Sleep(500 * time.Millisecond)
	}
}

// TestFlushSurvivesKill: a real client (qemu-io, or fio with crc32c
// verify headers) writes 4 KiB to 128 MiB and FLUSHes through one `zos
// node`, which is killed with SIGKILL right after the FLUSH is answered;
// through another node every acknowledged byte reads back. The write-back
// cache is 48 MiB, so the largest writes overflow it. Twelve cycles on a
// 3-node cluster and eight on a 6-node one, the victim rotating; at the
// end every cycle's data is checked again.
func TestFlushSurvivesKill(t *testing.T) {
	requireTools(t, "qemu-io", "fio")
	sizes := []int64{4 << 10, mib(1), mib(16), mib(64), mib(128)}
	for _, nodes := range []int{3, 6} {
		t.Run(fmt.Sprint(nodes, "nodes"), func(t *testing.T) {
			cycles := map[int]int{3: 12, 6: 8}[nodes]
			if testing.Short() {
				cycles = len(sizes)
			}
			c := testcluster.Start(t, nodes, testcluster.Options{Args: []string{"--dead-after", "2s", "--lease-ttl", "4s",
				"--raft-heartbeat", "500ms", "--raft-election", "500ms", "--writeback-cache", "48M"}})
			const name = "durable"
			if out, err := c.CLI(0, "vdisk", "create", name, "--size", "2G"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var done []flushCase
			off := int64(0)
			for cycle := range cycles {
				serving := cycle % nodes
				other := (serving + 1) % nodes
				fc := flushCase{tool: []string{"qemu-io", "fio"}[cycle%2], off: off, size: sizes[cycle%len(sizes)],
					pat: byte(0x11 + cycle), job: fmt.Sprintf("c%d", cycle)}
				off += max(fc.size, mib(1))
				// Hold the export open on the serving node, so that the
				// client's disconnect does not detach (and commit) it:
				// only the FLUSH stands between the data and the kill.
				hold := attach(t, c, serving, name)
				retryClient(t, fmt.Sprintf("cycle %d: %s writes %d bytes through %s", cycle, fc.tool, fc.size, c.Nodes[serving].ID),
					func(ctx context.Context) (string, error) { return fc.write(ctx, nbdURI(c, serving, name)) })
				if fc.tool == "fio" {
					// fio issues its FLUSHes (fsync, end_fsync) without
					// waiting for the writes in flight, which a FLUSH does
					// not cover (NBD: only writes replied to before it), so
					// its last writes may come after its last FLUSH. One
					// more FLUSH, on the held connection (multi-conn: it
					// covers every connection's completed writes), makes
					// all of them acknowledged.
					if err := hold.Cmd(nbdclient.CmdFlush, 0, 0, 0); err != nil {
						t.Fatalf("cycle %d: FLUSH after fio: %v", cycle, err)
					}
				}
				c.Kill(serving)
				hold.Close()
				t.Logf("cycle %d: %s wrote and flushed %d bytes at %d through %s, which was killed", cycle, fc.tool, fc.size, fc.off, c.Nodes[serving].ID)
				retryClient(t, fmt.Sprintf("cycle %d: verify through %s", cycle, c.Nodes[other].ID),
					func(ctx context.Context) (string, error) { return fc.verify(ctx, nbdURI(c, other, name)) })
				done = append(done, fc)
				c.Restart(serving)
				c.WaitReady(serving, 2*time.Minute)
				// The next node is killed once the cluster is back at full
				// redundancy: the chunks the verify wrote while this node
				// was away (its journal replay) have had their missing
				// shards rebuilt. Losing another node before that would be
				// two losses at once for those chunks, beyond m (they are
				// then unavailable, not lost, until one node returns).
				// The maps need not have the restarted node up yet: the
				// next cycle may write over two nodes and then see heal
				// move those chunks as the node is marked up, while its
				// serving node is killed (a move once left both copies
				// of such chunks on the killed node: heal's
				// TestMovesKeepRedundancy).
				testcluster.Eventually(t, 2*time.Minute, func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					st, err := c.Client(other).StoreStatus(ctx, false)
					if err != nil {
						return err
					}
					if st.Pending.Chunks != 0 {
						return fmt.Errorf("%d chunks await the repair of their missing shards", st.Pending.Chunks)
					}
					return nil
				})
			}
			// Every cycle's data, through a node that served none last.
			final := (cycles + 1) % nodes
			for _, fc := range done {
				retryClient(t, fmt.Sprintf("final check of %s at %d", fc.job, fc.off),
					func(ctx context.Context) (string, error) { return fc.verify(ctx, nbdURI(c, final, name)) })
			}
		})
	}
}

// TestSnapshotAfterFlush: right after a FLUSH of 4 KiB to 64 MiB through
// node 1 (which stays attached), a snapshot, a clone of it, an export and a
// NAME:ro attach, made through node 1 and through node 2, hold every
// flushed byte. Before the fix the snapshot could take the committed head
// while the FLUSH's data was only in the journal.
func TestSnapshotAfterFlush(t *testing.T) {
	requireTools(t, "qemu-io")
	c := testcluster.Start(t, 3, testcluster.Options{})
	const name = "snapme"
	if out, err := c.CLI(0, "vdisk", "create", name, "--size", "512M"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	hold := attach(t, c, 0, name)
	defer hold.Close()
	off := int64(0)
	for k, size := range []int64{4 << 10, mib(1), mib(16), mib(64)} {
		for _, via := range []int{0, 1} {
			fc := flushCase{tool: "qemu-io", off: off, size: size, pat: byte(0x31 + 2*k + via)}
			off += max(size, mib(1))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			if out, err := fc.write(ctx, nbdURI(c, 0, name)); err != nil {
				t.Fatalf("write %d bytes: %v\n%s", size, err, out)
			}
			cancel()
			snap := fmt.Sprintf("s%d-%d", k, via)
			clone := "clone-" + snap
			for _, args := range [][]string{{"vdisk", "snapshot", name, snap}, {"vdisk", "clone", name + "@" + snap, clone}} {
				if out, err := c.CLI(via, args...); err != nil {
					t.Fatalf("%v through %s: %v\n%s", args, c.Nodes[via].ID, err, out)
				}
			}
			for _, export := range []string{name + "@" + snap, clone + ":ro", name + ":ro"} {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				out, err := fc.verify(ctx, nbdURI(c, via, export))
				cancel()
				if err != nil {
					t.Fatalf("%s through %s right after a FLUSH of %d bytes: %v\n%s", export, c.Nodes[via].ID, size, err, out)
				}
			}
			raw := filepath.Join(t.TempDir(), snap+".raw")
			if out, err := c.CLI(via, "vdisk", "export", name, "-o", raw); err != nil {
				t.Fatalf("export through %s: %v\n%s", c.Nodes[via].ID, err, out)
			}
			f, err := os.Open(raw)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, fc.size)
			_, err = f.ReadAt(got, fc.off)
			f.Close()
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{fc.pat}, int(fc.size))) {
				t.Fatalf("export through %s right after a FLUSH of %d bytes lacks them (%v)", c.Nodes[via].ID, size, err)
			}
			os.Remove(raw)
		}
	}
}

// TestFlushWithoutQuorum: with fewer live storage nodes than the degraded
// write quorum (a 4+1 pool on five nodes, two of them killed and not yet
// marked down), a FLUSH that must commit fails with EIO rather than
// answer a false success; the data stays in the cache, and once a node
// returns the same FLUSH succeeds and every byte reads back through
// another node.
func TestFlushWithoutQuorum(t *testing.T) {
	c := testcluster.Start(t, 5, testcluster.Options{Args: []string{"--dead-after", "10m", "--lease-ttl", "4s"}})
	for _, args := range [][]string{{"pool", "create", "wide", "4", "1"}, {"vdisk", "create", "q", "--size", "256M", "--pool", "wide"}} {
		if out, err := c.CLI(0, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	conn := attach(t, c, 0, "q")
	defer conn.Close()
	data := make([]byte, mib(24)) // more than the journal takes between FLUSHes
	for i := range data {
		data[i] = byte(i*31 + i>>20)
	}
	write := func(p []byte) {
		for o := 0; o < len(p); o += 1 << 20 {
			if err := conn.Write(uint64(o), p[o:o+1<<20], 0); err != nil {
				t.Fatalf("write at %d: %v", o, err)
			}
		}
	}
	write(data[:mib(4)])
	if err := conn.Cmd(nbdclient.CmdFlush, 0, 0, 0); err != nil {
		t.Fatalf("FLUSH with every node up: %v", err)
	}
	c.Kill(3)
	c.Kill(4)
	write(data)
	err := conn.Cmd(nbdclient.CmdFlush, 0, 0, 0)
	if nbdclient.Errno(err) != nbdclient.EIO {
		t.Fatalf("FLUSH with 3 of 5 nodes for a 4+1 pool: %v, want EIO", err)
	}
	t.Logf("FLUSH without quorum: %v", err)
	c.Restart(3)
	c.WaitReady(3, 2*time.Minute)
	testcluster.Eventually(t, 2*time.Minute, func() error { return conn.Cmd(nbdclient.CmdFlush, 0, 0, 0) })
	conn.Close()
	other := attach(t, c, 1, "q")
	defer other.Close()
	got, err := readWhole(other, mib(24))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back through n2 after the FLUSH: err %v, equal %v", err, bytes.Equal(got, data))
	}
}
