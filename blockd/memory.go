package blockd

import (
	"os"
	"strconv"
	"strings"
	"sync"
)

// memoryLimit returns the memory this process may use: the physical memory,
// or the cgroup's limit when lower; 0 when unknown. The cache defaults are
// fractions of it.
var memoryLimit = sync.OnceValue(func() int64 {
	limit := physicalMemory()
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && n > 0 && (limit == 0 || n < limit) {
			limit = n
		}
	}
	return limit
})

// fractionOfMemory is min(def, memoryLimit()/div), at least floor; def
// when the memory is unknown.
func fractionOfMemory(def int64, div int64, floor int64) int64 {
	m := memoryLimit()
	if m <= 0 {
		return def
	}
	return max(min(def, m/div), floor)
}
