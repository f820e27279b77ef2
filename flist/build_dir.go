package flist

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BuildDir builds a tree from the local directory dir. Symlinks are stored
// as links and never followed; hard links inside the tree stay hard links;
// xattrs, owners, modes and nanosecond times are kept. Mount points below dir
// are crossed like any directory.
func BuildDir(ctx context.Context, dir string, opts *Options) (*Tree, error) {
	b, err := newBuilder(ctx, opts)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("flist: %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("flist: %s: %w", dir, ErrNotDir)
	}
	t := NewTree()
	root, err := b.dirNode(dir, "", &st, nil)
	if err != nil {
		return b.abort(err)
	}
	t.Root = root
	links := map[[2]uint64]*Node{}
	if err := b.walkDir(dir, "", root, links); err != nil {
		return b.abort(err)
	}
	return b.finish(t, filepath.Base(filepath.Clean(dir)))
}

func statTime(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec).UTC() }

func (b *builder) dirNode(abs, rel string, st *unix.Stat_t, links map[[2]uint64]*Node) (*Node, error) {
	n := &Node{Inode: Inode{
		Mode:  st.Mode & (TypeMask | PermMask),
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: statTime(st.Mtim),
		Atime: statTime(st.Atim),
		Ctime: statTime(st.Ctim),
	}}
	xs, err := readXattrs(abs)
	if err != nil {
		return nil, fmt.Errorf("flist: xattrs of %s: %w", abs, err)
	}
	n.Xattrs = xs
	return n, nil
}

func (b *builder) walkDir(abs, rel string, dir *Node, links map[[2]uint64]*Node) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("flist: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("flist: read %s: %w", abs, err)
	}
	sort.Strings(names)
	dir.children = make(map[string]*Node, len(names))
	for _, name := range names {
		if err := CheckName(name); err != nil {
			return err
		}
		cabs := filepath.Join(abs, name)
		crel := name
		if rel != "" {
			crel = rel + "/" + name
		}
		var st unix.Stat_t
		if err := unix.Lstat(cabs, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // vanished while walking
			}
			return fmt.Errorf("flist: %s: %w", cabs, err)
		}
		typ := st.Mode & unix.S_IFMT
		key := [2]uint64{st.Dev, st.Ino}
		if typ != unix.S_IFDIR && st.Nlink > 1 {
			if n := links[key]; n != nil {
				dir.children[name] = n
				b.entry(crel, false)
				continue
			}
		}
		n, err := b.dirNode(cabs, crel, &st, links)
		if err != nil {
			return err
		}
		switch typ {
		case unix.S_IFDIR:
			dir.children[name] = n
			b.entry(crel, false)
			if err := b.walkDir(cabs, crel, n, links); err != nil {
				return err
			}
			continue
		case unix.S_IFREG:
			f, err := os.OpenFile(cabs, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				return fmt.Errorf("flist: %w", err)
			}
			n.Size = st.Size
			n.Chunks, err = b.chunk(f, st.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("flist: %s: %w", cabs, err)
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(cabs)
			if err != nil {
				return fmt.Errorf("flist: %w", err)
			}
			if target == "" || len(target) > MaxTargetLen || strings.IndexByte(target, 0) >= 0 {
				return fmt.Errorf("flist: %s: unusable symlink target", cabs)
			}
			n.Target = target
			n.Size = int64(len(target))
		case unix.S_IFCHR, unix.S_IFBLK:
			if !b.opts.AllowDevices {
				return refuseDevice(crel)
			}
			n.Rdev = st.Rdev
		case unix.S_IFIFO, unix.S_IFSOCK:
		default:
			return fmt.Errorf("flist: %s: unknown file type %#o", cabs, typ)
		}
		if st.Nlink > 1 {
			links[key] = n
		}
		dir.children[name] = n
		b.entry(crel, typ == unix.S_IFREG)
	}
	return nil
}

// readXattrs returns the extended attributes of path (not following
// symlinks), sorted by name. File systems without xattr support yield none.
func readXattrs(path string) ([]Xattr, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, err
	}
	var out []Xattr
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name == "" {
			continue
		}
		vsize, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return nil, err
		}
		val := make([]byte, vsize)
		vsize, err = unix.Lgetxattr(path, name, val)
		if err != nil {
			return nil, err
		}
		out = append(out, Xattr{Name: name, Value: val[:vsize]})
	}
	sortXattrs(out)
	return out, nil
}
