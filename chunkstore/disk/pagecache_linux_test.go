package disk_test

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"golang.org/x/sys/unix"
)

// TestPageCacheWindow: the store leaves at most PageCacheBytes of the
// segment data it wrote in the kernel's page cache, and the data it
// dropped still reads back; with the window off, the kernel keeps what was
// written (which shows the measurement can see resident pages).
func TestPageCacheWindow(t *testing.T) {
	const (
		window = 4 << 20
		total  = 48 << 20
		chunk  = 1 << 20
	)
	p := chunkstore.Profile{K: 2, M: 1}
	for _, tc := range []struct {
		name   string
		window int64
	}{{"window", window}, {"off", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := pageCacheDir(t)
			s := open(t, disk.Config{Dir: dir, PageCacheBytes: tc.window, SegmentSize: 16 << 20})
			var all []chunkstore.Shard
			for i := range total / (chunk * 3 / 2) {
				sh := shardsOf(uint64(i+1), chunk, p)
				mustPut(t, s, sh...)
				all = append(all, sh...)
			}
			res := residentBytes(t, filepath.Join(dir, "seg"))
			t.Logf("%d MiB written, %d KiB resident", total>>20, res>>10)
			switch {
			case tc.window > 0 && res > window+64<<10:
				t.Fatalf("%d KiB of segment data resident, window %d KiB", res>>10, window>>10)
			case tc.window < 0 && res < total/2:
				t.Skipf("the kernel kept only %d KiB of %d MiB written (memory pressure?): the window cannot be measured here", res>>10, total>>20)
			}
			for _, sh := range all {
				checkShard(t, s, sh)
			}
		})
	}
}

// pageCacheDir is a temporary directory on a file system with a page
// cache: tmpfs pages cannot be dropped.
func pageCacheDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type != unix.TMPFS_MAGIC {
		return dir
	}
	dir, err := os.MkdirTemp("/var/tmp", "zos-disk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// residentBytes is the size of the pages of dir's files that are in the
// page cache (mincore).
func residentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() == 0 {
			f.Close()
			continue
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatal(errno)
		}
		for _, v := range vec {
			if v&1 != 0 {
				n += int64(os.Getpagesize())
			}
		}
		if err := unix.Munmap(m); err != nil {
			t.Fatal(err)
		}
	}
	return n
}
