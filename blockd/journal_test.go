package blockd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/raft/fsm"
)

func vdiskRecord(t *testing.T, e *env, name string) *fsm.VDisk {
	t.Helper()
	var v fsm.VDisk
	err := e.ctl.Read(context.Background(), func(s *fsm.State) error {
		x := s.VDisks[name]
		if x == nil {
			return errors.New("no vdisk " + name)
		}
		v = *x
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &v
}

// crash stops a Disk as a kill -9 of its node would: nothing more is
// committed, the lease is not given back, and the node is marked down so
// that the lease lapses at once.
func crash(t *testing.T, e *env, d *Disk, node string) {
	t.Helper()
	d.abort()
	if _, err := e.ctl.Apply(context.Background(), fsm.OpNodeState, fsm.NodeStateArgs{ID: node, State: fsm.NodeDown}); err != nil {
		t.Fatal(err)
	}
}

// A FLUSH answered from the journal survives the writer's crash even when
// no commit could store anything: random writes, zeroes and trims with
// flushes, and now and then a bulk write of 8-24 MiB (committed by the next
// FLUSH), the last stretch while the chunk store refuses every put; then
// the writer crashes and another node replays the journal on attach.
func TestJournalCrashModel(t *testing.T) {
	for _, bs := range []int64{4096, 65536} {
		t.Run(map[int64]string{4096: "4K", 65536: "64K"}[bs], func(t *testing.T) {
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 11))
			e := newEnv().withJournal(t)
			s1 := e.service(t, "n1", func(c *Config) { c.WritebackInterval = 10 * time.Millisecond })
			const size = 40<<20 + 512
			mustCreate(t, s1, "jc", size, bs, "db")
			d, _ := mustOpen(t, s1, "jc")
			ctx := context.Background()
			model := make([]byte, size)
			durable := make([]byte, size)
			const steps = 400
			for step := range steps {
				if step == steps*3/4 {
					// From here on only the journal makes flushes durable.
					// Flush first: a bulk write just before (which skips
					// the journal) would otherwise make the next FLUSH a
					// commit, which the store now refuses, unless the
					// background write-back happened to commit it in time.
					if err := d.Flush(ctx); err != nil {
						t.Fatalf("step %d: flush: %v", step, err)
					}
					copy(durable, model)
					e.store.failPut.Store(true)
				}
				off := rng.Int64N(size)
				n := min(rng.Int64N(2*bs)+1, size-off)
				if step < steps*3/4 && rng.IntN(40) == 0 {
					// Bulk: more than the journal captures between two
					// FLUSHes, in 1 MiB requests; the next FLUSH commits.
					bulk := min(int64(8+rng.IntN(17))<<20, size-off)
					p := make([]byte, bulk)
					for i := range p {
						p[i] = byte(rng.IntN(251) + 1)
					}
					for o := int64(0); o < bulk; o += 1 << 20 {
						if err := d.WriteAt(ctx, p[o:min(o+1<<20, bulk)], off+o, false); err != nil {
							t.Fatalf("step %d: bulk write: %v", step, err)
						}
					}
					copy(model[off:], p)
					continue
				}
				switch op := rng.IntN(10); {
				case op < 6:
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.IntN(251) + 1)
					}
					if err := d.WriteAt(ctx, p, off, rng.IntN(20) == 0); err != nil {
						t.Fatalf("step %d: write: %v", step, err)
					}
					copy(model[off:], p)
				case op == 6:
					if err := d.WriteZeroes(ctx, off, n, nbd.ZeroFlags(rng.IntN(2))*nbd.ZeroNoHole); err != nil {
						t.Fatalf("step %d: zero: %v", step, err)
					}
					clear(model[off : off+n])
				case op == 7:
					if err := d.Trim(ctx, off, n, false); err != nil {
						t.Fatalf("step %d: trim: %v", step, err)
					}
					trimModel(model, off, n, bs)
				default:
					if err := d.Flush(ctx); err != nil {
						t.Fatalf("step %d: flush: %v", step, err)
					}
					copy(durable, model)
				}
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatalf("final flush with the store refusing puts: %v", err)
			}
			copy(durable, model)
			crash(t, e, d, "n1")
			if v := vdiskRecord(t, e, "jc"); !v.Journaled {
				t.Fatal("the vdisk is not marked journaled after its writer crashed")
			}
			e.store.failPut.Store(false)
			// A node without the journal refuses to attach it rather than
			// lose the journaled writes.
			jl := e.journal
			e.journal = nil
			if _, _, err := e.service(t, "n2", nil).Open(ctx, "jc"); err == nil {
				t.Fatal("a node without a journal attached a vdisk whose writes wait in one")
			}
			e.journal = jl

			s2 := e.service(t, "n2", nil)
			d2, rel2 := mustOpen(t, s2, "jc")
			if got := readAll(t, d2); !bytes.Equal(got, durable) {
				t.Fatalf("after replay the vdisk differs from what was flushed (first difference at %d)", firstDiff(got, durable))
			}
			rel2()
			v := vdiskRecord(t, e, "jc")
			if v.Journaled || v.JournalEpoch != d2.Epoch() || v.JournalSeq == 0 {
				t.Fatalf("after a clean detach: journaled %v, mark (%d, %d), want false and epoch %d", v.Journaled, v.JournalEpoch, v.JournalSeq, d2.Epoch())
			}
			// The replayed state is in the head: a node without a journal
			// reads it too.
			e.journal = nil
			s3 := e.service(t, "n1", nil)
			if _, err := e.ctl.Apply(ctx, fsm.OpNodeState, fsm.NodeStateArgs{ID: "n1", State: fsm.NodeUp}); err != nil {
				t.Fatal(err)
			}
			ro, _ := mustOpen(t, s3, "jc:ro")
			if got := readAll(t, ro); !bytes.Equal(got, durable) {
				t.Fatal("the committed head differs from what was flushed")
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The node taking a vdisk over seals its journal: the old writer, which
// still believes its lease valid, can no longer get a FLUSH acknowledged.
func TestJournalFencesOldWriter(t *testing.T) {
	e := newEnv().withJournal(t)
	s1 := e.service(t, "n1", func(c *Config) { c.LeaseTTL = 2 * time.Hour; c.LeaseRenew = time.Hour })
	s2 := e.service(t, "n2", nil)
	ctx := context.Background()
	mustCreate(t, s1, "jf", 1<<20, 4096, "db")
	d1, _ := mustOpen(t, s1, "jf")
	if err := d1.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	// n1 is declared down (its lease lapses in the control plane) while
	// its engine, partitioned, still holds an hour of lease locally.
	if _, err := e.ctl.Apply(ctx, fsm.OpNodeState, fsm.NodeStateArgs{ID: "n1", State: fsm.NodeDown}); err != nil {
		t.Fatal(err)
	}
	d2, _ := mustOpen(t, s2, "jf")
	e.store.failPut.Store(true) // d1 can only try its journal
	if err := d1.WriteAt(ctx, bytes.Repeat([]byte{3}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d1.Flush(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("old writer's flush after takeover: %v, want ErrLeaseLost", err)
	}
	e.store.failPut.Store(false)
	got := make([]byte, 4096)
	if err := d2.ReadAt(ctx, got, 0); err != nil || got[0] != 1 {
		t.Fatalf("new writer reads %d (%v), want the flushed 1", got[0], err)
	}
}

// journaledCrash attaches name on s as node n1, writes p at off with FUA
// while the chunk store refuses puts (so the write is only in the
// journal), and crashes n1.
func journaledCrash(t *testing.T, e *env, s *Service, name string, p []byte, off int64) {
	t.Helper()
	d, _ := mustOpen(t, s, name)
	e.store.failPut.Store(true)
	if err := d.WriteAt(context.Background(), p, off, true); err != nil {
		t.Fatal(err)
	}
	crash(t, e, d, "n1")
	e.store.failPut.Store(false)
}

// Operations that read the head of a vdisk whose writer crashed replay its
// journal first: a snapshot holds every flushed write.
func TestJournalSettlesBeforeSnapshot(t *testing.T) {
	e := newEnv().withJournal(t)
	s1 := e.service(t, "n1", nil)
	s2 := e.service(t, "n2", nil)
	ctx := context.Background()
	mustCreate(t, s1, "js", 1<<20, 4096, "db")
	journaledCrash(t, e, s1, "js", []byte("journaled"), 8192)
	if _, err := s2.Snapshot(ctx, "js", "after"); err != nil {
		t.Fatal(err)
	}
	snap, _ := mustOpen(t, s2, "js@after")
	got := make([]byte, 9)
	if err := snap.ReadAt(ctx, got, 8192); err != nil || string(got) != "journaled" {
		t.Fatalf("snapshot reads %q (%v), want the flushed write", got, err)
	}
	if v := vdiskRecord(t, e, "js"); v.Journaled || v.Lease != nil {
		t.Fatalf("after settling: journaled %v, lease %+v", v.Journaled, v.Lease)
	}
}

// A vdisk deleted and created again under the same name never replays the
// old one's journal.
func TestJournalNotReplayedIntoNewVDisk(t *testing.T) {
	e := newEnv().withJournal(t)
	s1 := e.service(t, "n1", nil)
	s2 := e.service(t, "n2", nil)
	ctx := context.Background()
	mustCreate(t, s1, "jr", 1<<20, 4096, "db")
	journaledCrash(t, e, s1, "jr", []byte("old vdisk"), 0)
	// Delete without dropping the journal (as if its nodes were away).
	if _, err := e.ctl.Apply(ctx, fsm.OpVDiskDelete, fsm.VDiskDeleteArgs{Name: "jr", Force: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a distinct creation time
	mustCreate(t, s2, "jr", 1<<20, 4096, "db")
	d2, _ := mustOpen(t, s2, "jr")
	got := make([]byte, 9)
	if err := d2.ReadAt(ctx, got, 0); err != nil || !isZero(got) {
		t.Fatalf("new vdisk reads %q (%v), want zeroes", got, err)
	}
}

// failingJournal refuses appends on demand, like a journal node that went
// away.
type failingJournal struct {
	journal.Log
	fail atomic.Bool
}

func (f *failingJournal) Append(ctx context.Context, name string, epoch uint64, recs []journal.Record) error {
	if f.fail.Load() {
		return errInjected
	}
	return f.Log.Append(ctx, name, epoch, recs)
}

// When the journal cannot take an append, a FLUSH commits instead: it
// still succeeds, and what it acknowledged is in the head.
func TestJournalAppendFailureCommits(t *testing.T) {
	e := newEnv().withJournal(t)
	fj := &failingJournal{Log: e.journal}
	e.journal = fj
	s1 := e.service(t, "n1", nil)
	ctx := context.Background()
	mustCreate(t, s1, "ja", 1<<20, 4096, "db")
	d1, _ := mustOpen(t, s1, "ja")
	if err := d1.WriteAt(ctx, []byte("through the journal"), 0, true); err != nil {
		t.Fatal(err)
	}
	fj.fail.Store(true)
	if err := d1.WriteAt(ctx, []byte("through a commit"), 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := d1.Flush(ctx); err != nil {
		t.Fatalf("flush with the journal failing: %v", err)
	}
	// Committed: a read-only view of the head has both writes, whatever
	// the journal holds.
	e.journal = nil
	s2 := e.service(t, "n2", nil)
	ro, _ := mustOpen(t, s2, "ja:ro")
	got := make([]byte, 4096+16)
	if err := ro.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got[:19]) != "through the journal" || string(got[4096:]) != "through a commit" {
		t.Fatalf("head holds %q / %q", got[:19], got[4096:])
	}
}

func FuzzJournalOps(f *testing.F) {
	f.Add(appendOp(appendOp(nil, jWrite, 0, 512, 3, []byte("abc")), jZero, byte(nbd.ZeroNoHole), 0, 4096, nil))
	f.Add(appendOp(nil, jTrim, 0, 1<<40, 1<<20, nil))
	f.Add([]byte{jWrite, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, p []byte) {
		ops, err := decodeOps(p)
		if err != nil {
			return
		}
		var again []byte
		for _, o := range ops {
			if o.off < 0 || o.n <= 0 || o.kind == jWrite && int64(len(o.data)) != o.n {
				t.Fatalf("decoded a bad op %+v", o)
			}
			again = appendOp(again, o.kind, o.flags, o.off, o.n, o.data)
		}
		if !bytes.Equal(again, p) {
			t.Fatal("ops do not re-encode to their payload")
		}
	})
}

// vdisk info says when a failed writer's journal awaits replay.
func TestInfoUnreplayed(t *testing.T) {
	now := time.Now()
	v := &fsm.VDisk{Name: "u", Journaled: true}
	if !infoOf(v, now).Unreplayed {
		t.Fatal("a journaled vdisk without a writer is not reported unreplayed")
	}
	v.Lease = &fsm.Lease{Node: "n1", Epoch: 3, Expires: now.Add(time.Minute).UnixNano()}
	if in := infoOf(v, now); in.Unreplayed || in.AttachedTo != "n1" {
		t.Fatalf("with a live writer: %+v", in)
	}
}

// Bulk writes (more than the capture buffer between two FLUSHes) are not
// journaled: the FLUSH after them commits, so it fails while the store
// refuses puts; once a commit covers them, small synced writes go through
// the journal again and succeed with the store refusing puts.
func TestJournalBulkWritesCommit(t *testing.T) {
	e := newEnv().withJournal(t)
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	mustCreate(t, s, "jb", 64<<20, 65536, "db")
	d, _ := mustOpen(t, s, "jb")
	chunk := bytes.Repeat([]byte{9}, 1<<20)
	for off := int64(0); off < 24<<20; off += 1 << 20 {
		if err := d.WriteAt(ctx, chunk, off, false); err != nil {
			t.Fatal(err)
		}
	}
	e.store.failPut.Store(true)
	if err := d.Flush(ctx); err == nil {
		t.Fatal("a FLUSH after 24 MiB of writes succeeded with the store refusing puts: it used the journal")
	}
	e.store.failPut.Store(false)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.store.failPut.Store(true)
	defer e.store.failPut.Store(false)
	if err := d.WriteAt(ctx, []byte("small"), 30<<20, true); err != nil {
		t.Fatalf("a small synced write after the bulk was committed: %v", err)
	}
}

// A FLUSH after one write larger than the capture buffer (so nothing of it
// is journaled) commits: the write survives the writer's crash. Before the
// fix such a FLUSH was answered at once, from a journal that held nothing.
func TestBulkWriteFlushSurvivesCrash(t *testing.T) {
	for _, n := range []int64{maxJournalBuffer - 1<<20, maxJournalBuffer, 2 * maxJournalBuffer} {
		t.Run(fmt.Sprint(n>>20, "MiB"), func(t *testing.T) {
			e := newEnv().withJournal(t)
			s1 := e.service(t, "n1", nil)
			ctx := context.Background()
			mustCreate(t, s1, "bw", 64<<20, 16384, "db")
			d, _ := mustOpen(t, s1, "bw")
			p := bytes.Repeat([]byte{0x5a}, int(n))
			if err := d.WriteAt(ctx, p, 0, false); err != nil {
				t.Fatal(err)
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			crash(t, e, d, "n1")
			s2 := e.service(t, "n2", nil)
			d2, _ := mustOpen(t, s2, "bw")
			got := make([]byte, n)
			if err := d2.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, p) {
				t.Fatalf("after the crash the flushed %d bytes differ at %d", n, firstDiff(got, p))
			}
		})
	}
}

// servicePeers connects the env's services as nodes do (blockd.Peers).
type servicePeers struct {
	mu  sync.Mutex
	svc map[string]*Service
}

func (p *servicePeers) Sync(ctx context.Context, node, name string) error {
	p.mu.Lock()
	s := p.svc[node]
	p.mu.Unlock()
	if s == nil {
		return fmt.Errorf("node %s unreachable", node)
	}
	return s.SyncLocal(ctx, name)
}

// Operations that read the head on another node than the writer's see
// every write the writer acknowledged: FLUSHes answered from the journal,
// with the background commit slowed down so that it has not landed when
// the snapshot, export, clone and NAME:ro on the other node start.
func TestSettleAcrossNodes(t *testing.T) {
	for _, n := range []int{4 << 10, 1 << 20, 20 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := newEnv().withJournal(t)
			peers := &servicePeers{svc: map[string]*Service{}}
			withPeers := func(c *Config) { c.Peers = peers }
			s1 := e.service(t, "n1", withPeers)
			s2 := e.service(t, "n2", withPeers)
			peers.svc["n1"], peers.svc["n2"] = s1, s2
			ctx := context.Background()
			mustCreate(t, s1, "sa", 64<<20, 16384, "db")
			d, _ := mustOpen(t, s1, "sa")
			want := make([]byte, n)
			for i := range want {
				want[i] = byte(i*7 + 1)
			}
			e.store.putDelay.Store(int64(20 * time.Millisecond)) // the commit lags
			if err := d.WriteAt(ctx, want, 1<<20, false); err != nil {
				t.Fatal(err)
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s2.Snapshot(ctx, "sa", "s1"); err != nil {
				t.Fatal(err)
			}
			e.store.putDelay.Store(0)
			check := func(what, export string) {
				t.Helper()
				x, rel := mustOpen(t, s2, export)
				defer rel()
				got := make([]byte, n)
				if err := x.ReadAt(ctx, got, 1<<20); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s misses the flushed write (err %v)", what, err)
				}
			}
			check("the snapshot", "sa@s1")
			if _, err := s2.Clone(ctx, "sa", "s1", "sa-clone", ""); err != nil {
				t.Fatal(err)
			}
			check("the clone", "sa-clone:ro")
			// A second flushed write, then NAME:ro and export at once.
			e.store.putDelay.Store(int64(20 * time.Millisecond))
			for i := range want {
				want[i] ^= 0xff
			}
			if err := d.WriteAt(ctx, want, 1<<20, true); err != nil {
				t.Fatal(err)
			}
			check("NAME:ro", "sa:ro")
			e.store.putDelay.Store(0)
			// The background commit would have landed by now: the export
			// needs a fresh acknowledged write to race with.
			if err := d.WriteAt(ctx, want[:512], 1<<20, true); err != nil { // one more
				t.Fatal(err)
			}
			e.store.putDelay.Store(int64(20 * time.Millisecond))
			exported := exportBytes(t, s2, "sa", "")
			e.store.putDelay.Store(0)
			if !bytes.Equal(exported[1<<20:1<<20+n], want) {
				t.Fatal("the export misses the flushed write")
			}
		})
	}
}

// A takeover is visible: vdisk info says from whom, and once the new
// writer's first write is committed, how long the vdisk was not writable
// (from the failed writer's last lease renewal); the metric has it too.
func TestTakeoverReported(t *testing.T) {
	e := newEnv().withJournal(t)
	s1 := e.service(t, "n1", nil)
	ctx := context.Background()
	mustCreate(t, s1, "tk", 1<<20, 4096, "db")
	journaledCrash(t, e, s1, "tk", []byte("before"), 0)
	s2 := e.service(t, "n2", nil)
	d2, _ := mustOpen(t, s2, "tk")
	in, err := s2.Get(ctx, "tk", false)
	if err != nil {
		t.Fatal(err)
	}
	if tk := in.Takeover; tk == nil || tk.From != "n1" || tk.Node != "n2" || tk.Epoch != d2.Epoch() || tk.Written {
		t.Fatalf("takeover after attach: %+v", in.Takeover)
	}
	if err := d2.WriteAt(ctx, []byte("after"), 4096, true); err != nil {
		t.Fatal(err)
	}
	if err := d2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	in, _ = s2.Get(ctx, "tk", false)
	if tk := in.Takeover; tk == nil || !tk.Written || tk.Seconds <= 0 {
		t.Fatalf("takeover after the first write: %+v", in.Takeover)
	}
	var m dto.Metric
	if err := s2.m.takeover.Write(&m); err != nil || m.GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("takeover histogram: %v, %d samples, want 1", err, m.GetHistogram().GetSampleCount())
	}
}
