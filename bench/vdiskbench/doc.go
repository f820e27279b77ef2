// Package vdiskbench measures vdisks end to end with fio's nbd engine
// against the anchors of issue 4 in the same run: qemu-nbd on a raw file
// and nbdkit memory (via bench/nbdbench, which runs the fio jobs:
// 4k randrw QD32, 1M sequential read and write, 4k randwrite with
// fsync=16). `zos bench vdisk` calls Run; `zos bench nbd` measures a vdisk
// of a loopback cluster of whole nodes instead (Raft, HTTP API, agents), so
// the two together separate blockd's own cost from the node's.
//
// The zos target is a vdisk served by an in-process blockd Service and NBD
// server on 127.0.0.x over Config.Store (default: a local disk shard store
// with fsync, through chunkstore.WholeChunks, i.e. one node without
// redundancy), with the control plane in process (raft.NewLocal). Point
// Config.ZosURI at a vdisk of a running cluster to measure that instead.
package vdiskbench
