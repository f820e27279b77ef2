package disk

import "golang.org/x/sys/unix"

const pageSize = 4096

// dropPages asks the kernel to drop the clean cached pages of fd's range
// [off, off+n). It is advice: an error changes nothing that matters.
func dropPages(fd uintptr, off, n int64) {
	_ = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED)
}

// adviseRandom turns off the kernel's readahead for fd: shard reads are
// whole records at known offsets, and readahead would read (and cache)
// the neighbouring records of a random read for nothing.
func adviseRandom(fd uintptr) {
	_ = unix.Fadvise(int(fd), 0, 0, unix.FADV_RANDOM)
}
