// Package bench holds zos's end-to-end benchmarks. Each one runs real
// components (a loopback cluster, real NBD and FUSE clients) and, where the
// issue names one, an anchor measured in the same run (qemu-nbd, nbdkit,
// native disk, raw reedsolomon + BLAKE3), and reports ratios to it. `zos
// bench` runs them; docs/benchmarks.md keeps the latest figures and the
// commands that produced them.
package bench
