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
// CHUNKING_FIGURES
//
// # Usage
//
//	tree, kind, err := flist.Build(ctx, "rootfs.tar.zst", &flist.Options{Store: store})
//	ref, size, meta, err := flist.Put(ctx, store, tree) // the flist file, as a blob
//	r, err := flist.OpenStored(ctx, store, ref)         // or flist.OpenFile(path)
//	in, err := r.Resolve("/bin/sh")
//	err = r.Cat(ctx, store, "/etc/os-release", os.Stdout)
package flist
