// Package flistbench measures flists against their anchors in the same
// run, for `zos bench flist` and testing.B: cold start of a mount served by
// the hub over HTTP vs downloading and extracting the whole tar.gz, warm
// sequential reads through the mount vs the native disk, a find+stat walk
// of the mount vs the source directory, and dedup of two versions of a root
// file system under several chunkings. Results carry ratios; nothing here
// asserts speed.
package flistbench
