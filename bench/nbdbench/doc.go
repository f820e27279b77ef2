// Package nbdbench measures the zos NBD server with fio's nbd engine
// against the anchors the design names, in the same run: `nbdkit memory`
// and qemu-nbd serving a raw file. It is what `zos bench nbd` runs.
//
// Every target gets the same export size and the same fio jobs, one after
// the other (never concurrently: they share the CPUs). Before the jobs each
// target is filled with data by a sequential fio write, so reads return
// data and not holes (a sparse read would flatter servers that skip holes).
// Results are IOPS and MiB/s per target and job, and the ratios of zos to
// each anchor.
//
// By default the zos target is an in-process nbd.Server over a
// memexport.Export (the server's own cost, comparable to nbdkit memory);
// Config.ZosURI points the benchmark at any running zos node instead
// (vdisks on a cluster).
package nbdbench
