package orchestrator

import (
	"net/http"
	"strings"

	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/raft"
)

// MaxIdempotencyKey bounds an Idempotency-Key header value.
const MaxIdempotencyKey = 255

// idempotent wraps the authenticated routes: a write (any method but GET,
// HEAD and OPTIONS) that carries an Idempotency-Key header makes its
// control-plane proposals under request ids derived from the key, scoped
// to the caller's token (raft.WithRequestID). A client that lost an answer
// sends the request again with the same key: what already took effect is
// not applied again, and the answer is the first one. The key is an
// opaque string of 1 to 255 visible ASCII characters (a structured-field
// string in quotes, as in the IETF draft, is accepted too); anything else
// is refused with 400 before anything is done.
func (s *Server) idempotent(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("Idempotency-Key")
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			vals = nil
		}
		if len(vals) == 0 {
			h.ServeHTTP(w, r)
			return
		}
		key, err := parseIdempotencyKey(vals)
		if err != nil {
			httpx.WriteError(w, err)
			return
		}
		id, _ := IdentityFrom(r.Context())
		scoped := "http:" + id.TokenID + ":" + key
		h.ServeHTTP(w, r.WithContext(raft.WithRequestID(r.Context(), scoped)))
	})
}

func parseIdempotencyKey(vals []string) (string, error) {
	if len(vals) > 1 {
		return "", httpx.BadRequest("more than one Idempotency-Key header; send one")
	}
	key := vals[0]
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	if key == "" || len(key) > MaxIdempotencyKey || strings.IndexFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
		return "", httpx.BadRequest("Idempotency-Key must be 1-%d visible ASCII characters (no spaces), e.g. a UUID; got %d bytes", MaxIdempotencyKey, len(vals[0]))
	}
	return key, nil
}
