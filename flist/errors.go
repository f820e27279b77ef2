package flist

import (
	"errors"
	"fmt"
)

// Errors. Functions wrap these with %w and context; test with errors.Is.
var (
	// ErrCorrupt: an flist file failed its checksums or its structural
	// validation (truncated, tampered with, or written by a buggy builder).
	ErrCorrupt = errors.New("flist: corrupt flist file")
	// ErrVersion: an flist file of a format version this build cannot read.
	ErrVersion = errors.New("flist: unsupported flist format version")
	// ErrNotFound: no such path in the flist.
	ErrNotFound = errors.New("flist: no such file or directory")
	// ErrNotDir: a path component is not a directory.
	ErrNotDir = errors.New("flist: not a directory")
	// ErrUnsafePath: an archive entry or path that could escape the tree
	// (absolute, "..", NUL, empty component).
	ErrUnsafePath = errors.New("flist: unsafe path")
	// ErrDeviceRefused: a device node in input whose uploader may not create
	// devices (Options.AllowDevices is false).
	ErrDeviceRefused = errors.New("flist: device files not allowed")
	// ErrBadArchive: input that is not a readable tar, OCI layout or docker
	// save archive, or is truncated.
	ErrBadArchive = errors.New("flist: bad archive")
	// ErrIsDir: a regular-file operation on a directory.
	ErrIsDir = errors.New("flist: is a directory")
)

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}
