package journal

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
	"golang.org/x/sys/unix"
)

// This file is the Dir's file I/O, through its vfs.FS. On vfs.Default an
// append is one pwritev and one fdatasync on the file descriptor and the
// directory lock is a flock, as before the FS seam existed; on any other
// FS (a memory FS, faultfs) the same steps go through the vfs.File
// methods, so that injected faults fire.

// ErrSyncFailed: an append to the journal failed its write or fdatasync,
// so its file can take no durable appends until the Dir is reopened (see
// journal.failed). It wraps chunkstore.ErrUnavailable: for Replicated the
// node is as good as unreachable for that journal, and the append goes to
// the next node of the ranking.
var ErrSyncFailed = fmt.Errorf("%w: journal: a write or fdatasync failed", chunkstore.ErrUnavailable)

// lockDir takes the directory's LOCK file: one process (and one Dir) at a
// time.
func (d *Dir) lockDir() (io.Closer, error) {
	path := d.fs.PathJoin(d.cfg.Dir, lockName)
	if !d.osFS {
		l, err := d.fs.Lock(path)
		if err != nil {
			return nil, fmt.Errorf("journal: %s is in use by another Dir or process (lock: %v)", d.cfg.Dir, err)
		}
		return l, nil
	}
	lock, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("journal: %s is in use by another Dir or process (flock: %v)", d.cfg.Dir, err)
	}
	return lock, nil
}

// readFile returns the contents of path.
func (d *Dir) readFile(path string) ([]byte, error) {
	f, err := d.fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// writeAt writes parts at off: one pwritev on vfs.Default, WriteAt calls
// otherwise.
func (d *Dir) writeAt(f vfs.File, parts [][]byte, off int64) error {
	if d.osFS {
		return pwritev(f.Fd(), parts, off)
	}
	for _, p := range parts {
		if _, err := f.WriteAt(p, off); err != nil {
			return err
		}
		off += int64(len(p))
	}
	return nil
}

// syncData makes f's data durable: fdatasync.
func (d *Dir) syncData(f vfs.File) error {
	if d.osFS {
		return fdatasync(f.Fd())
	}
	return f.SyncData()
}

// truncate cuts j's file f to size (j locked) and returns the file to use
// from then on: f itself when it can be truncated in place (an OS file),
// else a new file written with f's first size bytes and renamed over it.
// An in-place truncation is not synced (see Trim).
func (d *Dir) truncate(j *journal, f vfs.File, size int64) (vfs.File, error) {
	if t, ok := f.(interface{ Truncate(int64) error }); ok {
		if err := t.Truncate(size); !errors.Is(err, errors.ErrUnsupported) {
			return f, err
		}
	}
	keep := make([]byte, size)
	if _, err := f.ReadAt(keep, 0); err != nil {
		return nil, err
	}
	if err := d.writeAtomic(j.path, keep); err != nil {
		return nil, err
	}
	d.dropFile(j)
	return d.file(j)
}

// writeAtomic replaces path with parts: written to a temporary file,
// synced, renamed over path, and the directory synced. A crash leaves the
// old file or the new one (and maybe a temporary file OpenDir removes).
func (d *Dir) writeAtomic(path string, parts ...[]byte) error {
	tmp := path + tmpExt
	f, err := d.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	err = d.writeAt(f, parts, 0)
	if err == nil && !d.cfg.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.fs.Rename(tmp, path)
	}
	if err != nil {
		d.fs.Remove(tmp)
		return err
	}
	return d.syncDir()
}

func (d *Dir) syncDir() error {
	if d.cfg.NoSync {
		return nil
	}
	f, err := d.fs.OpenDir(d.cfg.Dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// pwritev writes parts at off in the file fd with as few pwritev calls as
// the kernel allows (one, for up to 1024 parts).
func pwritev(fd uintptr, parts [][]byte, off int64) error {
	parts = append([][]byte(nil), parts...) // advanced below; the caller's stays
	for {
		for len(parts) > 0 && len(parts[0]) == 0 {
			parts = parts[1:]
		}
		if len(parts) == 0 {
			return nil
		}
		batch := parts[:min(len(parts), maxIov)]
		n, err := unix.Pwritev(int(fd), batch, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		for n > 0 {
			if n >= len(parts[0]) {
				n -= len(parts[0])
				parts = parts[1:]
			} else {
				parts[0] = parts[0][n:]
				n = 0
			}
		}
	}
}

func fdatasync(fd uintptr) error {
	for {
		if err := unix.Fdatasync(int(fd)); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
