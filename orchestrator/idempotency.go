package orchestrator

import (
	"context"
	"net/http"

	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/raft"
)

// MaxIdempotencyKey bounds an Idempotency-Key header value.
const MaxIdempotencyKey = httpx.MaxIdempotencyKey

// idempotent wraps the authenticated routes: a write (any method but GET,
// HEAD and OPTIONS) that carries an Idempotency-Key header makes its
// control-plane proposals under request ids derived from the key, scoped
// to the caller's token (raft.WithRequestID). A client that lost an answer
// sends the request again with the same key: what already took effect is
// not applied again, and the answer is the first one. The key is parsed by
// httpx.IdempotencyKey; a malformed one is refused with 400 before
// anything is done.
func (s *Server) idempotent(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := httpx.IdempotencyKey(r)
		if err != nil {
			httpx.WriteError(w, err)
			return
		}
		if key == "" {
			h.ServeHTTP(w, r)
			return
		}
		id, _ := IdentityFrom(r.Context())
		h.ServeHTTP(w, r.WithContext(withKey(r, id, key)))
	})
}

// WithIdempotencyKey gives a route that authenticates itself (the hub's,
// mounted on the public mux) the same Idempotency-Key handling as the
// API's own writes: r with the request id of its key, scoped to the
// request's token, which it identifies. A request without a key, a read,
// or one whose token does not identify comes back as it is (for the
// handler to serve or refuse); a malformed key on a request that does is
// a 400 *httpx.Error, and the request must be refused.
func (s *Server) WithIdempotencyKey(r *http.Request) (*http.Request, error) {
	if len(r.Header.Values(httpx.IdempotencyHeader)) == 0 {
		return r, nil
	}
	id, ok := IdentityFrom(r.Context())
	if !ok {
		var err error
		if id, err = s.Identify(r); err != nil {
			return r, nil
		}
	}
	key, err := httpx.IdempotencyKey(r)
	if err != nil || key == "" {
		return r, err
	}
	return r.WithContext(withKey(r, id, key)), nil
}

// withKey is r's context with the request id of key, scoped to the token
// (two callers never share a key).
func withKey(r *http.Request, id Identity, key string) context.Context {
	return raft.WithRequestID(r.Context(), "http:"+id.TokenID+":"+key)
}
