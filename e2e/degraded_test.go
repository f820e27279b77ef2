package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd/nbdclient"
	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/node"
)

// image is what a vdisk must read back: every write, applied once its
// FLUSH was answered (the tests only compare after a FLUSH).
type image struct {
	t    *testing.T
	data []byte
	rng  *rand.Rand
}

func newImage(t *testing.T, size int) *image {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return &image{t: t, data: make([]byte, size), rng: rand.New(rand.NewPCG(seed, 11))}
}

// write writes n random bytes at off through conn, in writes of at most
// 1 MiB.
func (im *image) write(conn *nbdclient.Conn, off, n int) {
	im.t.Helper()
	for n > 0 {
		l := min(n, 1<<20)
		p := make([]byte, l)
		for i := range p {
			p[i] = byte(im.rng.Uint32())
		}
		if err := conn.Write(uint64(off), p, 0); err != nil {
			im.t.Fatalf("write %d bytes at %d: %v", l, off, err)
		}
		copy(im.data[off:], p)
		off, n = off+l, n-l
	}
}

// scatter writes count random 4 KiB blocks anywhere on the disk.
func (im *image) scatter(conn *nbdclient.Conn, count int) {
	im.t.Helper()
	for range count {
		im.write(conn, im.rng.IntN(len(im.data)/4096)*4096, 4096)
	}
}

func (im *image) flush(conn *nbdclient.Conn) {
	im.t.Helper()
	if err := conn.Cmd(nbdclient.CmdFlush, 0, 0, 0); err != nil {
		im.t.Fatalf("FLUSH: %v", err)
	}
}

// verify reads the whole disk back through conn.
func (im *image) verify(conn *nbdclient.Conn, what string) {
	im.t.Helper()
	got, err := readWhole(conn, int64(len(im.data)))
	if err != nil {
		im.t.Fatalf("%s: read: %v", what, err)
	}
	if !bytes.Equal(got, im.data) {
		for i := range got {
			if got[i] != im.data[i] {
				im.t.Fatalf("%s: first difference at byte %d", what, i)
			}
		}
	}
}

// storeStatus runs `zos store status -o json` on node i.
func storeStatus(c *testcluster.Cluster, i int) (node.StoreStatus, error) {
	var st node.StoreStatus
	out, err := c.CLI(i, "store", "status", "-o", "json")
	if err != nil {
		return st, fmt.Errorf("zos store status: %v: %s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("zos store status -o json: %v: %s", err, out)
	}
	return st, nil
}

// storeHealthy: every node reachable, no degraded or unreadable chunk, no
// pending repair, no heal pass running.
func storeHealthy(c *testcluster.Cluster, i int) error {
	st, err := storeStatus(c, i)
	if err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if !n.Reachable || n.State != "up" {
			return fmt.Errorf("node %s is %s, reachable %v", n.ID, n.State, n.Reachable)
		}
	}
	switch cs := st.Census; {
	case cs == nil:
		return errors.New("no census")
	case cs.Degraded > 0 || cs.Unreadable > 0:
		return fmt.Errorf("census: %d degraded, %d unreadable of %d chunks", cs.Degraded, cs.Unreadable, cs.Chunks)
	}
	if p := st.Pending; p.Chunks > 0 || p.Dropped > 0 {
		return fmt.Errorf("pending repairs: %+v", p)
	}
	for _, l := range st.Local {
		if l.Error != "" || l.Heal.Running {
			return fmt.Errorf("node %s: heal running %v, error %q", l.Node, l.Heal.Running, l.Error)
		}
	}
	return nil
}

// nodeState returns the map state of node id.
func nodeState(t *testing.T, c *testcluster.Cluster, i int, id string) (string, error) {
	cs, err := status(t, c, i)
	if err != nil {
		return "", err
	}
	for _, n := range cs.Nodes {
		if n.ID == id {
			return string(n.State), nil
		}
	}
	return "", fmt.Errorf("no node %s", id)
}

// TestDegradedOneNodeKilled: a 3-node cluster (2+1) with one node killed
// and not marked down (--dead-after 10m) keeps serving its vdisk: the
// killed node served it, so a survivor takes it over (lease TTL), replays
// its journal and commits it degraded; writes of several MiB and FLUSHes
// succeed through both survivors and read back. The killed node restarts
// on its directory (no map change): the pending repairs rebuild its
// shards until `zos store status` is healthy again (no periodic heal pass
// runs within the test), and every byte reads back through it.
func TestDegradedOneNodeKilled(t *testing.T) {
	// No periodic heal pass within the test: what heals is the return.
	c := testcluster.Start(t, 3, testcluster.Options{Args: []string{"--dead-after", "10m", "--lease-ttl", "4s", "--heal-interval", "1h"}})
	const size = 32 << 20
	if out, err := c.CLI(0, "vdisk", "create", "deg", "--size", fmt.Sprint(size)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	im := newImage(t, size)
	conn := attach(t, c, 2, "deg")
	im.write(conn, 0, 2<<20)
	im.scatter(conn, 16)
	im.flush(conn)
	c.Kill(2) // right after the FLUSH reply: its journal awaits replay
	conn.Close()

	conn = attach(t, c, 0, "deg") // retried until n3's lease lapses
	im.verify(conn, "n1 after taking the vdisk over from the killed n3")
	im.write(conn, 8<<20, 8<<20)
	im.scatter(conn, 64)
	im.flush(conn)
	im.verify(conn, "n1 after degraded writes")
	if err := conn.Disconnect(); err != nil {
		t.Fatal(err)
	}
	conn = attach(t, c, 1, "deg")
	im.verify(conn, "n2")
	im.write(conn, 20<<20, 3<<20)
	im.flush(conn)
	im.verify(conn, "n2 after degraded writes")
	if err := conn.Disconnect(); err != nil {
		t.Fatal(err)
	}

	st, err := storeStatus(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending.Chunks == 0 || len(st.Pending.Nodes) != 1 || st.Pending.Nodes[0].Node != "n3" {
		t.Fatalf("zos store status with n3 dead: pending %+v, want chunks waiting for n3", st.Pending)
	}
	t.Logf("with n3 dead: %d chunks pending, census %+v", st.Pending.Chunks, st.Census)
	if out, err := c.CLI(1, "store", "status"); err != nil || !strings.Contains(out, "missing shards on n3") {
		t.Fatalf("zos store status with n3 dead does not show what n3 lacks: %v\n%s", err, out)
	}

	c.Restart(2)
	c.WaitReady(2, 2*time.Minute)
	testcluster.Eventually(t, 5*time.Minute, func() error { return storeHealthy(c, 1) })
	conn = attach(t, c, 2, "deg")
	im.verify(conn, "n3 after its return")
	conn.Disconnect()
}

// TestDegradedNodeMarkedDown: the same cluster with --dead-after 3s: the
// vdisk is written while the killed node is dead but not yet marked down
// and after it is, then the node returns (marked up again) and heal and
// the pending repairs make `zos store status` healthy (heal passes follow
// the return: the periodic one is set beyond the test).
func TestDegradedNodeMarkedDown(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Args: []string{"--dead-after", "3s", "--lease-ttl", "4s", "--heal-interval", "1h"}})
	const size = 32 << 20
	if out, err := c.CLI(0, "vdisk", "create", "deg", "--size", fmt.Sprint(size)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	im := newImage(t, size)
	conn := attach(t, c, 0, "deg")
	defer conn.Close()
	im.write(conn, 0, 1<<20)
	im.flush(conn)
	c.Kill(2)
	// At once: most likely before n3 is marked down.
	im.write(conn, 2<<20, 4<<20)
	im.scatter(conn, 16)
	im.flush(conn)
	im.verify(conn, "n1 right after n3 was killed")
	st, err := storeStatus(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("right after the kill: %d chunks pending", st.Pending.Chunks)
	testcluster.Eventually(t, time.Minute, func() error {
		if s, err := nodeState(t, c, 0, "n3"); err != nil || s != "down" {
			return fmt.Errorf("n3 is %q (%v)", s, err)
		}
		return nil
	})
	im.write(conn, 10<<20, 4<<20)
	im.scatter(conn, 16)
	im.flush(conn)
	im.verify(conn, "n1 with n3 marked down")
	if err := conn.Disconnect(); err != nil {
		t.Fatal(err)
	}

	c.Restart(2)
	c.WaitReady(2, 2*time.Minute)
	testcluster.Eventually(t, time.Minute, func() error {
		if s, err := nodeState(t, c, 0, "n3"); err != nil || s != "up" {
			return fmt.Errorf("n3 is %q (%v)", s, err)
		}
		return nil
	})
	testcluster.Eventually(t, 5*time.Minute, func() error { return storeHealthy(c, 1) })
	conn = attach(t, c, 2, "deg")
	im.verify(conn, "n3 after its return")
	conn.Disconnect()
}
