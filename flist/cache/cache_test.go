package cache

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

func chunk(seed int64, n int) ([]byte, Key) {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b, ChunkKey(chunkstore.Sum(b))
}

func TestPutGet(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(Config{Dir: dir, MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data, k := chunk(1, 100000)
	if _, err := c.Get(k); !errors.Is(err, ErrMiss) {
		t.Fatalf("get before put: %v", err)
	}
	if err := c.Put(k, data); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(k)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %v", err)
	}
	buf := make([]byte, 1000)
	if n, err := c.ReadAt(k, buf, 5000); err != nil || n != 1000 || !bytes.Equal(buf, data[5000:6000]) {
		t.Fatalf("readat: %d %v", n, err)
	}
	if n, err := c.ReadAt(k, buf, int64(len(data))-10); err != nil || n != 10 {
		t.Fatalf("readat tail: %d %v", n, err)
	}
	u, _ := c.Usage()
	if u != int64(len(data)) {
		t.Errorf("usage %d", u)
	}
	// Persistent: a new instance (another process would be the same) sees
	// it and verifies it.
	c2, err := Open(Config{Dir: dir, MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := c2.Get(k); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reopen get: %v", err)
	}
}

func TestCorruptObjectDropped(t *testing.T) {
	dir := t.TempDir()
	c, _ := Open(Config{Dir: dir, MaxBytes: 8 << 20})
	data, k := chunk(2, 5000)
	c.Put(k, data)
	c.Close()
	p := c.path(k)
	os.Chmod(p, 0o644)
	bad := bytes.Clone(data)
	bad[100] ^= 1
	os.WriteFile(p, bad, 0o444)
	c2, _ := Open(Config{Dir: dir, MaxBytes: 8 << 20})
	defer c2.Close()
	if _, err := c2.Get(k); !errors.Is(err, ErrMiss) {
		t.Fatalf("corrupt object served: %v", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("corrupt object kept: %v", err)
	}
}

func TestBoundAndLRU(t *testing.T) {
	dir := t.TempDir()
	const max = 4 << 20
	c, err := Open(Config{Dir: dir, MaxBytes: max, TouchInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hotData, hot := chunk(1000, 256<<10)
	if err := c.Put(hot, hotData); err != nil {
		t.Fatal(err)
	}
	var keys []Key
	for i := 0; i < 60; i++ {
		data, k := chunk(int64(i), 256<<10)
		if err := c.Put(k, data); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		// Keep one object hot.
		time.Sleep(2 * time.Millisecond)
		if _, err := c.Get(hot); err != nil {
			t.Fatalf("hot object evicted after %d puts: %v", i, err)
		}
		if u, _ := DiskUsage(dir); u > max {
			t.Fatalf("disk usage %d over bound %d", u, max)
		}
	}
	if c.Has(keys[0]) {
		t.Error("oldest object survived")
	}
	if !c.Has(keys[len(keys)-1]) {
		t.Error("newest object evicted")
	}
	if _, err := Open(Config{Dir: dir, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if u, _ := DiskUsage(dir); u > 1<<20 {
		t.Errorf("reopen with a smaller bound left %d bytes", u)
	}
	big, bk := chunk(3, 3<<20)
	if err := c.Put(bk, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("object over half the bound: %v", err)
	}
}

// TestHelperProcess is a second process sharing the cache directory.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("ZOS_CACHE_HELPER_DIR")
	if dir == "" {
		t.Skip("helper")
	}
	max, _ := strconv.ParseInt(os.Getenv("ZOS_CACHE_HELPER_MAX"), 10, 64)
	base, n := int64(10000), 40
	if v := os.Getenv("ZOS_CACHE_HELPER_SEED"); v != "" {
		base, _ = strconv.ParseInt(v, 10, 64)
		n = 3
	}
	c, err := Open(Config{Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		data, k := chunk(base+int64(i), 200<<10)
		if err := c.Put(k, data); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("helper done")
}

func TestSharedAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	const max = 3 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for p := 0; p < 2; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "ZOS_CACHE_HELPER_DIR="+dir, "ZOS_CACHE_HELPER_MAX="+strconv.Itoa(max))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("helper: %v\n%s", err, out)
			}
		}()
	}
	stop := make(chan struct{})
	var over error
	var mon sync.WaitGroup
	mon.Add(1)
	go func() {
		defer mon.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if u, err := DiskUsage(dir); err == nil && u > max && over == nil {
				over = fmt.Errorf("usage %d over bound %d", u, max)
			}
		}
	}()
	c, err := Open(Config{Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 40; i++ {
		data, k := chunk(int64(20000+i), 200<<10)
		if err := c.Put(k, data); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(stop)
	mon.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if over != nil {
		t.Fatal(over)
	}
	// Objects another process wrote are readable (and verified) here.
	// Which of the 120 above survived depends on the order the three
	// processes finished in (the bound holds 15), so a last helper writes
	// three more, the newest objects of all.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ZOS_CACHE_HELPER_DIR="+dir, "ZOS_CACHE_HELPER_MAX="+strconv.Itoa(max), "ZOS_CACHE_HELPER_SEED=30000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("last helper: %v\n%s", err, out)
	}
	for i := 0; i < 3; i++ {
		data, k := chunk(int64(30000+i), 200<<10)
		got, err := c.Get(k)
		if err != nil {
			t.Fatalf("object %d of the last helper: %v", i, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("wrong content")
		}
	}
	ents, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	if len(ents) != 0 {
		t.Errorf("temporaries left: %v", ents)
	}
}

func TestConcurrentPutsInProcess(t *testing.T) {
	dir := t.TempDir()
	const max = 2 << 20
	c, err := Open(Config{Dir: dir, MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var over error
	var mon sync.WaitGroup
	mon.Add(1)
	go func() {
		defer mon.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if u, err := DiskUsage(dir); err == nil && u > max && over == nil {
				over = fmt.Errorf("usage %d over bound %d", u, max)
			}
		}
	}()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				data, k := chunk(int64(g*1000+i), 150<<10)
				if err := c.Put(k, data); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(stop)
	mon.Wait()
	if over != nil {
		t.Fatal(over)
	}
}
