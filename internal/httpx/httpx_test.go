package httpx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/zosproject/zos/raft/fsm"
)

type unknownOutcome struct{}

func (unknownOutcome) Error() string { return "outcome unknown" }
func (unknownOutcome) Is(t error) bool {
	fe, ok := t.(*fsm.Error)
	return ok && fe.Code == fsm.ErrOutcomeUnknown.Code
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{&fsm.Error{Code: "conflict", Msg: "x"}, http.StatusConflict, "conflict"},
		{&fsm.Error{Code: "outcome_unknown", Msg: "x"}, http.StatusServiceUnavailable, "outcome_unknown"},
		{fmt.Errorf("wrapped: %w", unknownOutcome{}), http.StatusServiceUnavailable, "outcome_unknown"},
		{&fsm.Error{Code: "key_reused", Msg: "x"}, http.StatusUnprocessableEntity, "key_reused"},
		{BadRequest("bad"), http.StatusBadRequest, "invalid"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, "timeout"},
		{errors.New("boom"), http.StatusInternalServerError, "internal"},
	} {
		if s, c := Classify(tc.err); s != tc.status || c != tc.code {
			t.Errorf("Classify(%v) = %d %s, want %d %s", tc.err, s, c, tc.status, tc.code)
		}
	}
}
