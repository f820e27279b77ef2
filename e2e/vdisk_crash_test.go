package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/blockd/nbd/nbdclient"
	"github.com/zosproject/zos/internal/testcluster"
)

const unit = 4096 // the model's granularity

// diskModel is what a vdisk may contain after a crash: for every 4 KiB unit
// the content acknowledged by the last FLUSH, plus whatever was written to
// it since (which may or may not have survived).
type diskModel struct {
	mu      sync.Mutex
	acked   map[int64][32]byte   // unit -> digest of the acknowledged content
	pending map[int64][][32]byte // unit -> digests written since the last FLUSH
}

func newModel() *diskModel {
	return &diskModel{acked: map[int64][32]byte{}, pending: map[int64][][32]byte{}}
}

func (m *diskModel) wrote(off int64, p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < len(p); i += unit {
		u := (off + int64(i)) / unit
		m.pending[u] = append(m.pending[u], sha256.Sum256(p[i:i+unit]))
	}
}

// flushed: every write completed before the FLUSH is now durable.
func (m *diskModel) flushed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for u, ds := range m.pending {
		m.acked[u] = ds[len(ds)-1]
	}
	clear(m.pending)
}

var zeroUnit = sha256.Sum256(make([]byte, unit))

// check verifies content read from the disk against the model.
func (m *diskModel) check(data []byte, base int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < len(data); i += unit {
		u := (base + int64(i)) / unit
		got := sha256.Sum256(data[i : i+unit])
		want, ok := m.acked[u]
		if !ok {
			want = zeroUnit
		}
		if got == want {
			continue
		}
		found := false
		for _, d := range m.pending[u] {
			if d == got {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("unit %d (offset %d): content matches neither the flushed write nor a later one", u, u*unit)
		}
	}
	return nil
}

// settle: after verification the disk's content is known again; adopt it.
func (m *diskModel) settle(data []byte, base int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < len(data); i += unit {
		m.acked[(base+int64(i))/unit] = sha256.Sum256(data[i : i+unit])
	}
	clear(m.pending)
}

// attach connects read-write to the vdisk through node i, retrying while
// the previous holder's lease lapses.
func attach(t *testing.T, c *testcluster.Cluster, i int, name string) *nbdclient.Conn {
	t.Helper()
	var conn *nbdclient.Conn
	testcluster.Eventually(t, 2*time.Minute, func() error {
		var err error
		conn, err = nbdclient.Dial(c.Nodes[i].IP+":10809", nbdclient.Options{Export: name, Structured: true})
		return err
	})
	return conn
}

func readWhole(conn *nbdclient.Conn, size int64) ([]byte, error) {
	out := make([]byte, 0, size)
	for off := int64(0); off < size; off += 1 << 20 {
		p, err := conn.Read(uint64(off), 1<<20)
		if err != nil {
			return nil, err
		}
		out = append(out, p...)
	}
	return out, nil
}

// TestVDiskCrash kills the serving node with SIGKILL in the middle of a
// write and flush workload (random writes of 4-64 KiB, now and then a bulk
// write of 8-24 MiB, a FLUSH every 8 writes), 20 times; after each crash
// another node takes the vdisk over and every byte a FLUSH acknowledged
// reads back. Extents are on (--extent-size 1M, the default, said
// explicitly): bulk writes are stored as extents, random ones as blocks of
// their own, overwrites split them, and random reads are ranged reads of
// them.
func TestVDiskCrash(t *testing.T) {
	cycles := 20
	if testing.Short() {
		cycles = 4
	}
	c := testcluster.Start(t, 3, testcluster.Options{Args: []string{"--dead-after", "2s", "--lease-ttl", "4s",
		"--raft-heartbeat", "500ms", "--raft-election", "500ms", "--extent-size", "1M"}})
	const size = 32 << 20
	if out, err := c.CLI(0, "vdisk", "create", "crashy", "--size", fmt.Sprint(size), "--block-size", "65536"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := newModel()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	serving := 0
	for cycle := 0; cycle < cycles; cycle++ {
		conn := attach(t, c, serving, "crashy")
		// Verify what the previous crash left, then adopt it.
		data, err := readWhole(conn, size)
		if err != nil {
			t.Fatalf("cycle %d: read through %s: %v", cycle, c.Nodes[serving].ID, err)
		}
		if err := m.check(data, 0); err != nil {
			t.Fatalf("cycle %d: after the crash of the previous server: %v", cycle, err)
		}
		m.settle(data, 0)

		var acked int
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				n := (1 + rng.IntN(16)) * unit
				if i%8 == 0 && rng.IntN(4) == 0 {
					// Bulk: 8-24 MiB before the next FLUSH, more than the
					// journal captures, so that FLUSH commits.
					n = (8 + rng.IntN(17)) << 20
				}
				off := int64(rng.IntN((size-n)/unit+1)) * unit
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(rng.IntN(256))
				}
				// Record before sending: a write that reaches the disk
				// but whose reply is lost is still a candidate.
				m.wrote(off, p)
				for o := 0; o < n; o += 1 << 20 {
					if err := conn.Write(uint64(off)+uint64(o), p[o:min(o+1<<20, n)], 0); err != nil {
						done <- err
						return
					}
				}
				if i%8 == 7 {
					if err := conn.Cmd(nbdclient.CmdFlush, 0, 0, 0); err != nil {
						done <- err
						return
					}
					m.flushed()
					acked++
				}
			}
		}()
		time.Sleep(time.Duration(500+rand.IntN(2000)) * time.Millisecond)
		c.Kill(serving)
		close(stop)
		<-done // the workload ends with the connection's error
		conn.Close()
		t.Logf("cycle %d: killed %s after %d acknowledged flushes", cycle, c.Nodes[serving].ID, acked)

		next := (serving + 1) % 3
		c.Restart(serving)
		c.WaitReady(serving, 2*time.Minute)
		serving = next
	}
	// A final check through a fresh attach.
	conn := attach(t, c, serving, "crashy")
	defer conn.Close()
	data, err := readWhole(conn, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.check(data, 0); err != nil {
		t.Fatal(err)
	}
	// FLUSHes were answered from the vdisk's journal, and takeovers
	// replayed it (a kill between an append and its commit).
	replays := 0
	for _, p := range c.Nodes {
		b, _ := os.ReadFile(p.Log)
		replays += bytes.Count(b, []byte("journal replayed"))
	}
	t.Logf("%d takeovers of %d replayed the journal", replays, cycles)
	if replays == 0 && cycles >= 20 {
		t.Fatal("no takeover replayed a journal: FLUSH is not going through the journal")
	}
}

// TestVDiskLoseTwoOfSix: with six storage nodes, two are killed; every vdisk
// stays readable and, once the two are marked down, writable.
func TestVDiskLoseTwoOfSix(t *testing.T) {
	c := testcluster.Start(t, 6, testcluster.Options{Args: []string{"--dead-after", "3s", "--lease-ttl", "4s"}})
	const size = 16 << 20
	contents := map[string][]byte{}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("v%d", i)
		if out, err := c.CLI(0, "vdisk", "create", name, "--size", fmt.Sprint(size)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		conn := attach(t, c, i, name)
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(j*7 + i)
		}
		for off := 0; off < size; off += 1 << 20 {
			if err := conn.Write(uint64(off), data[off:off+1<<20], 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := conn.Cmd(nbdclient.CmdFlush, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
		conn.Disconnect()
		contents[name] = data
	}
	c.Kill(4)
	c.Kill(5)
	for name, want := range contents {
		conn := attach(t, c, 1, name)
		got, err := readWhole(conn, size)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after losing two nodes: err=%v equal=%v", name, err, bytes.Equal(got, want))
		}
		// Writable: a write and a flush succeed (retried while the dead
		// nodes are being marked down).
		patch := bytes.Repeat([]byte{0xEE}, 64<<10)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for {
			err := conn.Write(4<<20, patch, nbdclient.FlagFUA)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s not writable after losing two of six nodes: %v", name, err)
			}
			time.Sleep(time.Second)
		}
		cancel()
		copy(want[4<<20:], patch)
		conn.Disconnect()
		conn = attach(t, c, 2, name)
		got, err = readWhole(conn, size)
		conn.Disconnect()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s re-read after the write: err=%v", name, err)
		}
	}
}
