package container

import "errors"

// Errors a caller can test with errors.Is. Messages say what to change.
var (
	ErrNotFound      = errors.New("container: no such container")
	ErrNameTaken     = errors.New("container: name already taken")
	ErrBadSpec       = errors.New("container: bad spec")
	ErrPortForwarded = errors.New("container: port already forwarded")
	ErrNoRuntime     = errors.New("container: runc not found (install the runc package: apt-get install -y runc)")
	ErrNotRunning    = errors.New("container: not running")
	ErrClosed        = errors.New("container: manager closed")
)

// IsUserError reports whether err is the caller's fault (bad input or a
// conflict) rather than the node's.
func IsUserError(err error) bool {
	return errors.Is(err, ErrBadSpec) || errors.Is(err, ErrNameTaken) ||
		errors.Is(err, ErrPortForwarded) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotRunning)
}
