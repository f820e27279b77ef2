package fsm

import "fmt"

// Error is an FSM refusal. Code is stable and machine-readable; Msg says
// what happened and, where the user can act, what to do.
type Error struct {
	Code string `json:"code"`
	Msg  string `json:"message"`
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return "fsm: " + e.Code
	}
	return e.Msg
}

// Is makes errors.Is match on Code, so errf(ErrNotFound, …) is ErrNotFound.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinel errors; compare with errors.Is.
var (
	ErrNotFound       = &Error{Code: "not_found"}
	ErrExists         = &Error{Code: "exists"}
	ErrInvalid        = &Error{Code: "invalid"}
	ErrConflict       = &Error{Code: "conflict"}
	ErrStaleEpoch     = &Error{Code: "stale_epoch"}
	ErrLeased         = &Error{Code: "leased"}
	ErrNotInitialized = &Error{Code: "not_initialized"}
	ErrUnknownOp      = &Error{Code: "unknown_op"}
	// ErrOutcomeUnknown: the command may or may not have taken effect
	// (its answer was lost with a leader, or its id was already forgotten);
	// retrying it with the same request id is safe.
	ErrOutcomeUnknown = &Error{Code: "outcome_unknown"}
	// ErrKeyReused: a request id was used again for a different command.
	ErrKeyReused = &Error{Code: "key_reused"}
)

func errf(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Msg: fmt.Sprintf(format, args...)}
}
