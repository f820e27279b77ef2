//go:build !linux

package disk

const pageSize = 4096

func dropPages(fd uintptr, off, n int64) {}

func adviseRandom(fd uintptr) {}
