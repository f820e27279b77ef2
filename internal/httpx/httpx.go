// Package httpx holds the few HTTP conventions every zos API handler
// shares: JSON answers, one error shape ({"error":{"code","message"}}),
// one mapping from error kinds to status codes, strict bounded JSON bodies.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/raft/fsm"
)

// MaxJSONBody bounds a JSON request body.
const MaxJSONBody = 1 << 20

// Error is an API error with an HTTP status. Handlers return it (or any
// error; Status maps the known kinds).
type Error struct {
	Status int
	Code   string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// BadRequest is a 400 "invalid" error.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "invalid", format, args...)
}

// Classify maps an error to (status, code).
func Classify(err error) (int, string) {
	var he *Error
	if errors.As(err, &he) {
		return he.Status, he.Code
	}
	var fe *fsm.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fsm.ErrNotFound.Code:
			return http.StatusNotFound, fe.Code
		case fsm.ErrExists.Code, fsm.ErrConflict.Code, fsm.ErrStaleEpoch.Code:
			return http.StatusConflict, fe.Code
		case fsm.ErrLeased.Code:
			return http.StatusLocked, fe.Code
		case fsm.ErrInvalid.Code, fsm.ErrUnknownOp.Code:
			return http.StatusBadRequest, fe.Code
		case fsm.ErrNotInitialized.Code, fsm.ErrOutcomeUnknown.Code:
			return http.StatusServiceUnavailable, fe.Code
		case fsm.ErrKeyReused.Code:
			return http.StatusUnprocessableEntity, fe.Code
		}
		return http.StatusInternalServerError, fe.Code
	}
	switch {
	case errors.Is(err, fsm.ErrOutcomeUnknown): // raft's OutcomeUnknownError
		return http.StatusServiceUnavailable, fsm.ErrOutcomeUnknown.Code
	case errors.Is(err, chunkstore.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, chunkstore.ErrBadRef), errors.Is(err, chunkstore.ErrTooLarge):
		return http.StatusBadRequest, "invalid"
	case errors.Is(err, chunkstore.ErrCorrupt):
		return http.StatusInternalServerError, "corrupt"
	case errors.Is(err, chunkstore.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, context.Canceled):
		return 499, "canceled"
	}
	return http.StatusInternalServerError, "internal"
}

// WriteError writes err in the API's error shape.
func WriteError(w http.ResponseWriter, err error) {
	status, code := Classify(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": err.Error()}})
}

// WriteJSON writes v as a JSON answer with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		WriteError(w, fmt.Errorf("encode answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// DecodeJSON strictly decodes a bounded JSON body into v: unknown fields,
// trailing data and oversized bodies are 400s with a clear message.
func DecodeJSON(r *http.Request, v any) error {
	body := http.MaxBytesReader(nil, r.Body, MaxJSONBody)
	d := json.NewDecoder(body)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return BadRequest("request body larger than %d bytes", MaxJSONBody)
		}
		if errors.Is(err, io.EOF) {
			return BadRequest("empty request body; expected JSON")
		}
		return BadRequest("malformed JSON body: %v", err)
	}
	if d.More() {
		return BadRequest("malformed JSON body: trailing data")
	}
	return nil
}

// Handler adapts a func returning an error to http.Handler: a non-nil
// error is written with WriteError.
type Handler func(w http.ResponseWriter, r *http.Request) error

func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		WriteError(w, err)
	}
}

// StatusWriter records the status code a handler answers with (for logs
// and metrics). It keeps streaming handlers streaming (Flush) and lets
// http.ResponseController reach the real writer (Unwrap).
type StatusWriter struct {
	http.ResponseWriter
	code int
}

// NewStatusWriter wraps w.
func NewStatusWriter(w http.ResponseWriter) *StatusWriter { return &StatusWriter{ResponseWriter: w} }

// Status is the code sent: the first WriteHeader's, 200 if the handler
// wrote a body without one or nothing at all.
func (w *StatusWriter) Status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// WriteHeader records the first code.
func (w *StatusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming handlers (export, diff) streaming.
func (w *StatusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
