// Package loopback hands out loopback address ranges to test packages, so
// that the tests of two packages (which `go test ./...` runs at once, in
// separate processes) never listen on the same address: a node a test
// restarts on its address and port cannot find it taken by another
// package's listener, and a hung test in one package cannot be mistaken
// for a server of another.
//
// Each package whose tests listen on more than 127.0.0.1 takes the /24
// 127.0.N.0/24 of its own, N being its place in Packages; add a package
// at the end of the list. Use it as
//
//	var lo = loopback.Prefix("chunkstore/erasure") // "127.0.1."
//	localcluster.Start(localcluster.Config{Prefix: lo, FirstHost: 40, ...})
//	net.Listen("tcp", loopback.Addr("chunkstore/remote", 7)+":0")
//
// Multi-process clusters (internal/testcluster) and `zos dev` in tests
// take random 127.X.Y.0/24 ranges with X >= 20, disjoint from these.
// internal/archtest checks that no test hard-codes 127.0.0.x beyond .1.
package loopback
