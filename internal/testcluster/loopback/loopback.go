package loopback

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
)

// Packages are the test packages that own a range, by path under the
// module: package i owns 127.0.(i+1).0/24. Append only; never reorder.
var Packages = []string{
	"chunkstore/erasure",
	"chunkstore/heal",
	"chunkstore/blob",
	"chunkstore/gc",
	"chunkstore/scrub",
	"chunkstore/remote",
	"chunkstore/journal",
	"blockd",
	"bench/storebench",
	"bench/vdiskbench",
}

// Prefix returns pkg's range as the first three octets and a dot,
// "127.0.N.". It panics if pkg has none (add it to Packages).
func Prefix(pkg string) string {
	i := slices.Index(Packages, pkg)
	if i < 0 {
		panic(fmt.Sprintf("loopback: package %q has no range; add it to loopback.Packages", pkg))
	}
	return fmt.Sprintf("127.0.%d.", i+1)
}

// Addr returns host (1..254) of pkg's range, "127.0.N.host".
func Addr(pkg string, host int) string {
	if host < 1 || host > 254 {
		panic(fmt.Sprintf("loopback: host %d outside 1..254", host))
	}
	return fmt.Sprintf("%s%d", Prefix(pkg), host)
}

// Blocks are the test packages that start clusters on fixed ports, and so
// need a fresh /24 for every cluster: block i is 127.(220+i).0.0/16, out
// of the way of Packages (127.0.N) and of the benchmark drivers, which run
// outside tests (127.20-219). Append only; never reorder.
var Blocks = []string{
	"node",
	"internal/testcluster", // every e2e cluster
}

// Fresh returns a /24 of pkg's block not handed out before in this
// process, as "127.B.N." (N picked at random first, so that concurrent
// test binaries of one package are unlikely to meet, and skipping a /24
// whose API port another process holds). It panics if pkg has
// no block (add it to Blocks) or its 250 /24s are used up.
func Fresh(pkg string) string {
	i := slices.Index(Blocks, pkg)
	if i < 0 {
		panic(fmt.Sprintf("loopback: package %q has no block; add it to loopback.Blocks", pkg))
	}
	freshMu.Lock()
	defer freshMu.Unlock()
	if freshUsed[pkg] == nil {
		freshUsed[pkg] = map[int]bool{}
	}
	used := freshUsed[pkg]
	if len(used) >= 250 {
		panic(fmt.Sprintf("loopback: package %q used all of its block", pkg))
	}
	n := rand.IntN(250)
	for used[n] || (len(used) < 200 && busy(fmt.Sprintf("127.%d.%d.", 220+i, n))) {
		n = (n + 1) % 250
	}
	used[n] = true
	return fmt.Sprintf("127.%d.%d.", 220+i, n)
}

// busy reports whether another process (a second test binary of the same
// package, run by hand beside CI's) serves the API port on one of the
// first hosts of the /24.
func busy(prefix string) bool {
	for host := 1; host <= 3; host++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("%s%d:5000", prefix, host))
		if err != nil {
			return true
		}
		ln.Close()
	}
	return false
}

var (
	freshMu   sync.Mutex
	freshUsed = map[string]map[int]bool{}
)
