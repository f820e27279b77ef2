package httpx

import (
	"net/http"
	"strings"
)

// IdempotencyHeader is the header a client sends to make a write safe to
// retry (the IETF draft's Idempotency-Key).
const IdempotencyHeader = "Idempotency-Key"

// MaxIdempotencyKey bounds an Idempotency-Key header value.
const MaxIdempotencyKey = 255

// IdempotencyKey returns the Idempotency-Key of a write request: "" when
// there is none or the method is a read (GET, HEAD, OPTIONS), which never
// takes one. The key is an opaque string of 1 to MaxIdempotencyKey visible
// ASCII characters (a structured-field string in quotes, as in the IETF
// draft, is the same key); anything else, or more than one header, is a
// 400 *Error: the request must be refused before anything is done.
//
// What a key means is the caller's (the orchestrator scopes it to the
// token and makes it the control-plane request id).
func IdempotencyKey(r *http.Request) (string, error) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return "", nil
	}
	vals := r.Header.Values(IdempotencyHeader)
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", BadRequest("more than one Idempotency-Key header; send one")
	}
	key := vals[0]
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	if key == "" || len(key) > MaxIdempotencyKey || strings.IndexFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
		return "", BadRequest("Idempotency-Key must be 1-%d visible ASCII characters (no spaces), e.g. a UUID; got %d bytes", MaxIdempotencyKey, len(vals[0]))
	}
	return key, nil
}
