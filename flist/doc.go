// Package flist is the zos flist: one small immutable file that describes a
// whole directory tree (every inode and, per regular file, its ordered list
// of chunks in the content-addressed chunk store), plus the builders that
// make one from a directory, a tar / tar.gz / tar.zst stream, an OCI image
// layout or a docker save archive, and the operations on flists (ls, stat,
// cat, inspect, merge, diff). The FUSE mount is flist/fuse, the chunk cache
// flist/cache, the HTTP hub flist/hub.
//
// # File format
//
// An flist file is a pebble sstable (TableFormatPebblev4, zstd-compressed
// 32 KiB blocks, every block checksummed) readable in place through any
// io.ReaderAt: a local file, a blob in the chunk store, or HTTP ranges.
// Keys:
//
//	0x01 "meta"            JSON Meta: format version, builder, creation time,
//	                       source, chunking, OCI config (entrypoint, cmd, env,
//	                       working dir, user, labels), stats
//	0x02 ino               inode record: mode, uid, gid, size, m/a/ctime (ns),
//	                       rdev, nlink, symlink target, xattrs
//	0x03 parent name       directory entry -> child ino + type
//	0x04 ino offset        chunk of a regular file -> Ref + size
//
// Inode numbers are 1..N in depth-first name order (root = 1); hard links
// are several entries naming one inode. A directory's entries are one
// contiguous key range (readdir = range scan, lookup = point seek), a file's
// chunks another. Open validates the whole structure unless told not to:
// sstable checksums, record decoding, safe names (no "", ".", "..", "/" or
// NUL), entries naming existing inodes of the right type, every directory
// with exactly one parent and reachable from the root, link counts, chunk
// lists contiguous and covering each file, and stats matching — so a
// corrupt, truncated or hostile file is ErrCorrupt, never a panic or an
// escaping path. Decoded blocks are cached process-wide (64 MiB).
//
// # Building
//
// Build detects its input; BuildDir, BuildTar, BuildOCILayout and
// BuildStream (spools an upload, then detects) are the specific entry
// points. Image layers are applied in order; ".wh.NAME" whiteouts and
// ".wh..wh..opq" opaque directories hide entries of the layers below;
// manifests, configs and layers are checked against their sha256 digests
// (docker save layers against the config's diff_ids). Untrusted input is
// refused with a clear error: names that are absolute or contain ".."
// (ErrUnsafePath), an entry below a symlink (symlinks are data and never
// followed: ErrNotDir), device nodes unless Options.AllowDevices (give it to
// admins only: ErrDeviceRefused), truncated or corrupt archives
// (ErrBadArchive). Progress is reported through Options.Progress.
//
// File contents are cut into chunks per file and stored through a
// chunkstore.Receiver; identical chunks dedup across files and flists for
// free because chunks are named by their BLAKE3 Ref.
//
// # Chunking
//
// DefaultChunking is FastCDC (gear hash, normalised chunking) with
// 256 KiB / 1 MiB / 4 MiB bounds, chosen from two measurements
// (flistbench.Dedup, bench/flistbench/dedup_test.go):
//
// Two versions of a Debian root file system — debootstrap --variant=minbase
// bookworm, and the same tree after apt-get upgrade from bookworm-updates and
// bookworm-security — 6768 paths, ~190 MiB each, stored together:
//
//	chunking              A MiB  B MiB  A+B MiB  ratio  B adds
//	fixed-256k            188.1  192.5    234.3  0.616  46.2 MiB
//	fixed-1m              188.4  192.5    234.6  0.616  46.2 MiB
//	fastcdc-64k-256k-1m   188.0  192.5    233.6  0.614  45.6 MiB
//	fastcdc-256k-1m-4m    188.4  192.5    234.6  0.616  46.2 MiB
//
// Most files are smaller than any chunk and are cut per file, and upgraded
// packages change whole binaries, so every chunking dedups the same 38%.
// The choice is decided by large files that change by insertion (a 64 MiB
// file with 100 bytes inserted in the middle):
//
//	chunking              B adds
//	fixed-256k/1m/4m      32.0 MiB (everything after the insertion)
//	fastcdc-64k-256k-1m    0.3 MiB
//	fastcdc-256k-1m-4m     3.0 MiB
//	fastcdc-1m-2m-4m       6.9 MiB
//
// FastCDC 256k/1m/4m keeps ~1 MiB average chunks (few fetches per file on
// a lazy mount, small flist files: 5249 chunks for the root file system)
// while re-storing only a few chunks around an insertion. It finds cut
// points at ~2.2 GB/s per core, close to the BLAKE3 every chunk goes through
// anyway (~2.9 GB/s here); tar ingestion runs at ~2 GB/s (BenchmarkBuildTar).
//
// # Usage
//
//	tree, kind, err := flist.Build(ctx, "rootfs.tar.zst", &flist.Options{Store: store})
//	ref, size, meta, err := flist.Put(ctx, store, tree) // the flist file, as a blob
//	r, err := flist.OpenStored(ctx, store, ref)         // or flist.OpenFile(path)
//	in, err := r.Resolve("/bin/sh")
//	err = r.Cat(ctx, store, "/etc/os-release", os.Stdout)
package flist
