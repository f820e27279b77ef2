package blockd

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// A commit whose round of blocks fails gives them back to the cache at
// once, and a write-back job may take them before the commit ends; the
// commit then leaves them to that job. (It used to end them once more as
// it failed: such a block was in the cache and in flight at once, the
// in-flight bytes went negative when the job ended it too, and a write
// into it could change the bytes the job was storing.)
func TestFailedRoundLeavesRestartedBlocks(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) {
		c.WritebackBytes = 1 << 20
		c.MaxDirtyBytes = 8 << 20
		c.WritebackInterval = time.Hour
		c.NodeCacheBytes = -1 // a commit reads the tree's root from the store
	})
	const bs = 16384
	mustCreate(t, s, "ab", 8<<20, bs, "db")
	d, release := mustOpen(t, s, "ab")
	ctx := context.Background()
	want := make([]byte, 8<<20)
	put := func(off int64, p []byte) {
		t.Helper()
		if err := d.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	put(4<<20, bytes.Repeat([]byte{9}, bs))
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	put(0, bytes.Repeat([]byte{1}, 4*bs)) // one stretch: one extent

	// The commit's tree read is held, and its round of blocks fails
	// meanwhile; then the tree read fails too, and the commit with it.
	// Write-back jobs' puts wait for jobsGo, then succeed. (The hooks
	// hold no put of the commit's: the Batcher may send a held put and a
	// failing one in one batch, which answers neither until both end.)
	fetchHeld, fetchGo, jobsGo := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	fetchHook := func(chunkstore.Ref) error {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil
		}
		close(fetchHeld)
		<-fetchGo
		return errInjected
	}
	var background atomic.Bool
	putHook := func(b []byte) error {
		switch {
		case len(b) < bs: // a tree node
			return nil
		case !background.Load():
			<-fetchHeld
			return errInjected
		}
		<-jobsGo
		return nil
	}
	e.store.fetchHook.Store(&fetchHook)
	e.store.putHook.Store(&putHook)
	flushed := make(chan error, 1)
	go func() { flushed <- d.Flush(ctx) }()
	select {
	case <-fetchHeld:
	case <-time.After(60 * time.Second):
		t.Fatal("the commit read no tree node")
	}
	wait.For(t, 60*time.Second, "the failed round's blocks back in the cache", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.cache.dirty[0] != nil && d.wb.inflight[0] == nil
	})
	// Past WritebackBytes: write-back jobs start, the oldest blocks
	// (those the round gave back) first.
	background.Store(true)
	put(1<<20, bytes.Repeat([]byte{2}, 2<<20))
	wait.For(t, 60*time.Second, "a write-back job storing block 0", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		b := d.wb.inflight[0]
		return b != nil && !b.owned && !b.done
	})
	close(fetchGo)
	if err := <-flushed; err == nil {
		t.Fatal("a flush whose blocks failed to store succeeded")
	}
	close(jobsGo)
	// (A commit that ended the job's blocks too counted the jobs below
	// zero.)
	wait.For(t, 60*time.Second, "the write-back jobs to end", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.wb.jobs <= 0
	})
	d.mu.Lock()
	err := d.invariantsLocked()
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	e.store.putHook.Store(nil)
	e.store.fetchHook.Store(nil)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	release()
	ro, _ := mustOpen(t, e.service(t, "n2", nil), "ab:ro")
	if !bytes.Equal(readAll(t, ro), want) {
		t.Fatal("committed content differs from what was written")
	}
}

// An unaligned write into a partial block reads the block's base without
// the disk's lock; if writes fill the block's other sectors meanwhile, it
// is complete when the write comes back and takes the bytes as they are
// (it used to fill the complete block from the base, and panicked with
// the lock held: every later request on the vdisk hung).
func TestUnalignedWriteIntoBlockCompletedMeanwhile(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) {
		c.BlockCacheBytes = -1
		c.NodeCacheBytes = -1
		c.WritebackBytes = 8 << 20
		c.WritebackInterval = time.Hour
	})
	const bs = 16384
	mustCreate(t, s, "uw", 1<<20, bs, "db")
	d, release := mustOpen(t, s, "uw")
	ctx := context.Background()
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{1}, bs), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{1}, bs)
	// The first half, sector aligned: a partial block over the stored one.
	copy(want, bytes.Repeat([]byte{2}, bs/2))
	if err := d.WriteAt(ctx, want[:bs/2], 0, false); err != nil {
		t.Fatal(err)
	}
	fetchGo := make(chan struct{})
	var held atomic.Int64
	hook := func(chunkstore.Ref) error {
		held.Add(1)
		<-fetchGo
		return nil
	}
	e.store.fetchHook.Store(&hook)
	unaligned := make(chan error, 1)
	go func() { unaligned <- d.WriteAt(ctx, []byte("unaligned"), bs/2+100, false) }()
	wait.For(t, 60*time.Second, "the unaligned write to read the block's base", func() bool { return held.Load() > 0 })
	// The second half, aligned: the block is complete now.
	copy(want[bs/2:], bytes.Repeat([]byte{3}, bs/2))
	if err := d.WriteAt(ctx, want[bs/2:], bs/2, false); err != nil {
		t.Fatal(err)
	}
	close(fetchGo)
	if err := <-unaligned; err != nil {
		t.Fatal(err)
	}
	e.store.fetchHook.Store(nil)
	copy(want[bs/2+100:], "unaligned")
	got := make([]byte, bs)
	if err := d.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("block differs from the writes (err %v)", err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	release()
	ro, _ := mustOpen(t, e.service(t, "n2", nil), "uw:ro")
	if got := readAll(t, ro)[:bs]; !bytes.Equal(got, want) {
		t.Fatal("committed block differs from the writes")
	}
}
