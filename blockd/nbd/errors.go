package nbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/zosproject/zos/blockd/nbd/internal/wire"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// errPanic wraps a panic raised by an Export; the request fails with EIO.
var errPanic = errors.New("nbd: export panicked")

// errnoOf maps an Export error to the NBD error value sent to the client.
// It is the one place where error kinds become NBD codes.
func errnoOf(err error, shuttingDown bool) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNoSpace):
		return wire.ENOSPC
	case errors.Is(err, ErrNotFast):
		return wire.ENOTSUP
	case errors.Is(err, ErrReadOnly):
		return wire.EPERM
	case shuttingDown && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return wire.ESHUTDOWN
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return wire.ENOSPC
		case syscall.EPERM, syscall.EACCES, syscall.EROFS:
			return wire.EPERM
		case syscall.EINVAL:
			return wire.EINVAL
		case syscall.ENOMEM:
			return wire.ENOMEM
		}
	}
	return wire.EIO
}

// requestError is a validation failure: the NBD error and a message for
// structured error chunks.
type requestError struct {
	errno uint32
	msg   string
}

func reqErr(errno uint32, format string, args ...any) *requestError {
	return &requestError{errno: errno, msg: fmt.Sprintf(format, args...)}
}
