package loopback

import (
	"fmt"
	"slices"
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
