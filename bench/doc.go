// Package bench holds zos's end-to-end benchmarks. Each one runs real
// components (a loopback cluster, real NBD and FUSE clients) and, where the
// issue names one, an anchor measured in the same run (qemu-nbd, nbdkit,
// native disk, raw reedsolomon + BLAKE3), and reports ratios to it. `zos
// bench` runs them; docs/benchmarks.md keeps the latest figures and the
// commands that produced them.
//
// Every workload returns a report.Workload (package bench/report): jobs,
// each with one report.Result per target — zos (Anchor false) and every
// anchor (Anchor true) — with its figure in the job's unit, optional
// latency percentiles (p50/p99/p99.9 in µs), and optional time series with
// events. cmd/zos collects them into a report.Report and writes report.md,
// results.json and plots with --out. A new workload (container, vm) plugs
// in by returning a report.Workload from a cmd/zos workloadFunc; nothing
// else in the report layer changes. Workloads against a cluster take a
// *Cluster (Connect for an existing one, StartDev for an embedded one) and
// remove every object they create, named with its Prefix ("bench-…"),
// then sweep what carries the prefix, so that a request an interrupt
// cancelled after the server acted on it leaves nothing either.
package bench
