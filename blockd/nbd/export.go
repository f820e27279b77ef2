package nbd

import (
	"context"
	"errors"
)

// Export is one block device served over NBD. The server calls its methods
// from many goroutines at once (requests in flight on one connection and
// several connections to the same export); an Export must be safe for
// concurrent use. Offsets and lengths are validated by the server against
// Size before a call: an Export never sees a request past its end.
type Export interface {
	// Size is the size in bytes. It may change between connections
	// (resize); a connection uses the size read at negotiation.
	Size() int64
	// ReadAt fills p from offset off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off. With fua the data must be durable (as after
	// Flush) before WriteAt returns.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush makes every write completed before the call durable.
	Flush(ctx context.Context) error
	// Trim tells the export the range is no longer needed; reads of it may
	// return zeroes afterwards.
	Trim(ctx context.Context, off, length int64, fua bool) error
	// WriteZeroes sets the range to zero. With ZeroFast the export must
	// return ErrNotFast at once unless zeroing is cheap (no data writes);
	// with ZeroNoHole the range must stay allocated.
	WriteZeroes(ctx context.Context, off, length int64, flags ZeroFlags) error
	// BlockStatus describes [off, off+length) as consecutive extents starting
	// at off. It may describe less than length (at least one extent), never
	// more than length.
	BlockStatus(ctx context.Context, off, length int64) ([]Extent, error)
}

// FullReader is an optional Export capability: FillsReads reports that
// ReadAt writes every byte of p whenever it returns nil (holes as
// zeroes). Read buffers are recycled across connections and exports, so
// the server clears each one before the ReadAt of an Export that does not
// promise this, lest a short fill send another's data; a FullReader's
// buffers are not cleared, which spares a pass over every byte read.
type FullReader interface {
	FillsReads() bool
}

// ZeroFlags qualify WriteZeroes.
type ZeroFlags uint8

const (
	ZeroFUA    ZeroFlags = 1 << iota // durable before returning
	ZeroNoHole                       // keep the range allocated
	ZeroFast                         // fail with ErrNotFast unless cheap
)

// Extent is one run of a BlockStatus answer (base:allocation context).
type Extent struct {
	Length int64
	Flags  ExtentFlags
}

// ExtentFlags are the NBD base:allocation flags.
type ExtentFlags uint32

const (
	ExtentHole ExtentFlags = 1 << 0 // NBD_STATE_HOLE: not allocated
	ExtentZero ExtentFlags = 1 << 1 // NBD_STATE_ZERO: reads as zeroes
)

// ExportInfo is what the server advertises for an export.
type ExportInfo struct {
	Name        string
	Description string
	Size        int64
	ReadOnly    bool
	// BlockSize is the preferred block size (NBD_INFO_BLOCK_SIZE); 0 for
	// the server default.
	BlockSize uint32
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: every connection to
	// this export sees the writes of the others once flushed.
	MultiConn bool
}

// Exports resolves export names. Open is called once per connection at
// OPT_GO / OPT_EXPORT_NAME; the returned release func is called when the
// connection ends (after a final Flush if the client disconnected cleanly).
// A name that does not exist is ErrUnknownExport; errors are reported to the
// client with their message.
type Exports interface {
	List(ctx context.Context) ([]ExportInfo, error)
	Info(ctx context.Context, name string) (ExportInfo, error)
	Open(ctx context.Context, name string) (exp Export, info ExportInfo, release func(), err error)
}

var (
	// ErrUnknownExport: no export of that name (NBD_REP_ERR_UNKNOWN).
	ErrUnknownExport = errors.New("nbd: unknown export")
	// ErrNotFast: a ZeroFast request that would need data writes
	// (NBD_ENOTSUP).
	ErrNotFast = errors.New("nbd: fast zero not possible")
	// ErrNoSpace: the backing store is full (NBD_ENOSPC).
	ErrNoSpace = errors.New("nbd: no space")
	// ErrReadOnly: write to a read-only export (NBD_EPERM).
	ErrReadOnly = errors.New("nbd: read-only export")
)

// ErrAttached: the export is in use in a way that forbids this attach (a
// vdisk attached read-write on another node); NBD_REP_ERR_POLICY with the
// error's message, which clients such as nbdinfo and qemu print.
var ErrAttached = errors.New("nbd: export attached elsewhere")
