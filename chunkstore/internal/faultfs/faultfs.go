// Package faultfs wraps a pebble vfs.FS to inject disk faults in tests:
// errors on reads, writes and syncs, short writes, and operations held
// until a test releases them, selected by operation and path. It also
// counts syncs per file (Syncs). Combine with vfs.NewCrashableMem and
// CrashClone to simulate a crash before fsync.
package faultfs

import (
	"errors"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Op is a file operation a Rule applies to.
type Op int

const (
	Write  Op = iota // Write and WriteAt
	Sync             // Sync, SyncData, SyncTo
	Read             // Read and ReadAt
	Create           // Create, OpenReadWrite of a new file
)

// ErrInjected is the default injected error (EIO).
var ErrInjected = error(syscall.EIO)

// Rule makes matching operations fail.
type Rule struct {
	Op Op
	// PathContains selects files whose path contains it ("" = all).
	PathContains string
	// Err is returned (default ErrInjected).
	Err error
	// Short makes a write store the first half of its bytes before failing.
	Short bool
	// Times limits how often the rule fires (0 = until removed).
	Times int
	// Hold, if set, makes the operation wait until Hold is closed and then
	// proceed normally (no error): a slow disk, or a gate a test opens.
	Hold <-chan struct{}
}

// FS is a fault-injecting vfs.FS.
type FS struct {
	vfs.FS
	mu    sync.Mutex
	rules []*rule
	hits  int
	syncs map[string]int // path -> successful syncs
}

type rule struct {
	Rule
	fired int
}

// Wrap returns a fault-injecting view of fs with no rules.
func Wrap(fs vfs.FS) *FS { return &FS{FS: fs} }

// Inject adds a rule and returns a function that removes it.
func (f *FS) Inject(r Rule) (remove func()) {
	if r.Err == nil {
		r.Err = ErrInjected
	}
	rr := &rule{Rule: r}
	f.mu.Lock()
	f.rules = append(f.rules, rr)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, x := range f.rules {
			if x == rr {
				f.rules = append(f.rules[:i], f.rules[i+1:]...)
				return
			}
		}
	}
}

// Clear removes every rule.
func (f *FS) Clear() {
	f.mu.Lock()
	f.rules = nil
	f.mu.Unlock()
}

// Hits reports how many faults fired.
func (f *FS) Hits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

// Syncs reports how many syncs (Sync, SyncData, SyncTo) of files whose
// path contains pathContains have succeeded.
func (f *FS) Syncs(pathContains string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for p, k := range f.syncs {
		if strings.Contains(p, pathContains) {
			n += k
		}
	}
	return n
}

func (f *FS) synced(path string, err error) {
	if err != nil {
		return
	}
	f.mu.Lock()
	if f.syncs == nil {
		f.syncs = map[string]int{}
	}
	f.syncs[path]++
	f.mu.Unlock()
}

// fault returns the rule that fails op on path, after waiting for a
// matching Hold rule if there is one.
func (f *FS) fault(op Op, path string) *rule {
	r := f.match(op, path)
	if r != nil && r.Hold != nil {
		<-r.Hold
		return nil
	}
	return r
}

func (f *FS) match(op Op, path string) *rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.Op != op || !strings.Contains(path, r.PathContains) {
			continue
		}
		if r.Times > 0 && r.fired >= r.Times {
			continue
		}
		r.fired++
		f.hits++
		return r
	}
	return nil
}

func (f *FS) wrap(file vfs.File, path string, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &File{File: file, fs: f, path: path}, nil
}

func (f *FS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if r := f.fault(Create, name); r != nil {
		return nil, r.Err
	}
	file, err := f.FS.Create(name, c)
	return f.wrap(file, name, err)
}

func (f *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.Open(name, opts...)
	return f.wrap(file, name, err)
}

func (f *FS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, c, opts...)
	return f.wrap(file, name, err)
}

func (f *FS) OpenDir(name string) (vfs.File, error) {
	file, err := f.FS.OpenDir(name)
	return f.wrap(file, name, err)
}

func (f *FS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.ReuseForWrite(oldname, newname, c)
	return f.wrap(file, newname, err)
}

// Truncate truncates the file if the wrapped file can be truncated (an OS
// file); errors.ErrUnsupported otherwise.
func (f *File) Truncate(size int64) error {
	t, ok := f.File.(interface{ Truncate(int64) error })
	if !ok {
		return errors.ErrUnsupported
	}
	return t.Truncate(size)
}

// Unwrap returns the wrapped FS.
func (f *FS) Unwrap() vfs.FS { return f.FS }

// File is a fault-injecting vfs.File.
type File struct {
	vfs.File
	fs   *FS
	path string
}

func (f *File) Write(p []byte) (int, error) {
	if r := f.fs.fault(Write, f.path); r != nil {
		if r.Short && len(p) > 1 {
			n, _ := f.File.Write(p[:len(p)/2])
			return n, r.Err
		}
		return 0, r.Err
	}
	return f.File.Write(p)
}

func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if r := f.fs.fault(Write, f.path); r != nil {
		if r.Short && len(p) > 1 {
			n, _ := f.File.WriteAt(p[:len(p)/2], off)
			return n, r.Err
		}
		return 0, r.Err
	}
	return f.File.WriteAt(p, off)
}

func (f *File) Read(p []byte) (int, error) {
	if r := f.fs.fault(Read, f.path); r != nil {
		return 0, r.Err
	}
	return f.File.Read(p)
}

func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if r := f.fs.fault(Read, f.path); r != nil {
		return 0, r.Err
	}
	return f.File.ReadAt(p, off)
}

func (f *File) Sync() error {
	if r := f.fs.fault(Sync, f.path); r != nil {
		return r.Err
	}
	err := f.File.Sync()
	f.fs.synced(f.path, err)
	return err
}

func (f *File) SyncData() error {
	if r := f.fs.fault(Sync, f.path); r != nil {
		return r.Err
	}
	err := f.File.SyncData()
	f.fs.synced(f.path, err)
	return err
}

func (f *File) SyncTo(length int64) (bool, error) {
	if r := f.fs.fault(Sync, f.path); r != nil {
		return false, r.Err
	}
	full, err := f.File.SyncTo(length)
	f.fs.synced(f.path, err)
	return full, err
}

// IsInjected reports whether err is (or wraps) an injected EIO.
func IsInjected(err error) bool { return errors.Is(err, ErrInjected) }
