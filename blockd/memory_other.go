//go:build !linux

package blockd

func physicalMemory() int64 { return 0 }
