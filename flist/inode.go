package flist

import (
	"io/fs"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// Ino numbers an inode inside one flist. The root directory is RootIno;
// inodes are numbered 1..N in depth-first, name-sorted order, so numbers are
// stable for a given tree. Hard links share one Ino.
type Ino uint64

// RootIno is the inode number of the root directory.
const RootIno Ino = 1

// File type bits of Inode.Mode (the POSIX st_mode layout, independent of the
// host's syscall package).
const (
	TypeMask    uint32 = 0o170000
	TypeSocket  uint32 = 0o140000
	TypeSymlink uint32 = 0o120000
	TypeReg     uint32 = 0o100000
	TypeBlock   uint32 = 0o060000
	TypeDir     uint32 = 0o040000
	TypeChar    uint32 = 0o020000
	TypeFifo    uint32 = 0o010000
	// PermMask covers permission, setuid, setgid and sticky bits.
	PermMask uint32 = 0o7777
)

// Limits a valid flist respects; the decoder rejects files beyond them.
const (
	MaxNameLen    = 255             // bytes in one path component (NAME_MAX)
	MaxPathLen    = 4096            // bytes in a path (PATH_MAX)
	MaxTargetLen  = 4095            // bytes in a symlink target
	MaxXattrName  = 255             // bytes in an xattr name (XATTR_NAME_MAX)
	MaxXattrValue = 64 << 10        // bytes in an xattr value (XATTR_SIZE_MAX)
	MaxFileSize   = int64(1) << 50  // 1 PiB: sane upper bound on one file
	MaxXattrs     = 1024            // xattrs per inode
	maxInodes     = uint64(1) << 32 // inodes per flist
)

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Inode is the metadata of one file, directory, link or node in an flist.
type Inode struct {
	Ino    Ino
	Mode   uint32 // type bits | permission bits, as st_mode
	UID    uint32
	GID    uint32
	Size   int64 // bytes for regular files; len(Target) for symlinks; 0 otherwise
	Mtime  time.Time
	Atime  time.Time
	Ctime  time.Time
	Rdev   uint64 // device number (Linux encoding) of char and block devices
	Nlink  uint32 // hard links to a non-directory; 2+subdirectories for a directory
	Target string // symlink target, stored as data and never followed
	Xattrs []Xattr
}

// Type returns the file type bits of Mode.
func (in *Inode) Type() uint32 { return in.Mode & TypeMask }

// IsDir reports whether the inode is a directory.
func (in *Inode) IsDir() bool { return in.Type() == TypeDir }

// IsRegular reports whether the inode is a regular file.
func (in *Inode) IsRegular() bool { return in.Type() == TypeReg }

// IsSymlink reports whether the inode is a symbolic link.
func (in *Inode) IsSymlink() bool { return in.Type() == TypeSymlink }

// FileMode converts Mode to an io/fs.FileMode.
func (in *Inode) FileMode() fs.FileMode { return ModeToFileMode(in.Mode) }

// Xattr returns the value of the named extended attribute.
func (in *Inode) Xattr(name string) ([]byte, bool) {
	for _, x := range in.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// ModeToFileMode converts an st_mode to an io/fs.FileMode.
func ModeToFileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	switch m & TypeMask {
	case TypeDir:
		fm |= fs.ModeDir
	case TypeSymlink:
		fm |= fs.ModeSymlink
	case TypeChar:
		fm |= fs.ModeDevice | fs.ModeCharDevice
	case TypeBlock:
		fm |= fs.ModeDevice
	case TypeFifo:
		fm |= fs.ModeNamedPipe
	case TypeSocket:
		fm |= fs.ModeSocket
	}
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

// FileModeToMode converts an io/fs.FileMode to an st_mode.
func FileModeToMode(fm fs.FileMode) uint32 {
	m := uint32(fm.Perm())
	switch {
	case fm&fs.ModeDir != 0:
		m |= TypeDir
	case fm&fs.ModeSymlink != 0:
		m |= TypeSymlink
	case fm&fs.ModeCharDevice != 0:
		m |= TypeChar
	case fm&fs.ModeDevice != 0:
		m |= TypeBlock
	case fm&fs.ModeNamedPipe != 0:
		m |= TypeFifo
	case fm&fs.ModeSocket != 0:
		m |= TypeSocket
	default:
		m |= TypeReg
	}
	if fm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if fm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if fm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// TypeName names a file type for listings: "dir", "file", "symlink", "char",
// "block", "fifo", "socket".
func TypeName(mode uint32) string {
	switch mode & TypeMask {
	case TypeDir:
		return "dir"
	case TypeReg:
		return "file"
	case TypeSymlink:
		return "symlink"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	case TypeFifo:
		return "fifo"
	case TypeSocket:
		return "socket"
	}
	return "unknown"
}

func validType(mode uint32) bool { return TypeName(mode) != "unknown" }

// Chunk is one piece of a regular file: Size bytes at Offset, stored in the
// chunk store under Ref.
type Chunk struct {
	Ref    chunkstore.Ref
	Offset int64
	Size   uint32
}

// Dirent is one directory entry.
type Dirent struct {
	Name string
	Ino  Ino
	Type uint32 // file type bits of the child's mode
}
