package orchestrator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/raft/fsm"
)

// Identity is who made a request.
type Identity struct {
	Name string // token name (the hub's "me"), or "node" for the cluster secret
	// TokenID is the token's ID ("node" for the cluster secret). It scopes
	// Idempotency-Keys: two callers never share one.
	TokenID string
	Admin   bool
	Node    bool // authenticated with the cluster secret
}

type identityKey struct{}

// IdentityFrom returns the identity of an authenticated request.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// HashToken returns the stored form of a token: hex SHA-256.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// NewToken returns a fresh random token "zos_<id>_<secret>" and its ID.
func NewToken() (token, id string) {
	var b [24]byte
	rand.Read(b[:])
	id = hex.EncodeToString(b[:4])
	return "zos_" + id + "_" + hex.EncodeToString(b[4:]), id
}

// RandomHex returns n random bytes as hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// Identify authenticates a request from the local replica of the token
// table. It does not need the leader, so authentication keeps working
// while an election runs.
func (s *Server) Identify(r *http.Request) (Identity, error) {
	tok := bearer(r)
	if tok == "" {
		return Identity{}, httpx.Errorf(http.StatusUnauthorized, "unauthorized", "missing bearer token (set ZOS_TOKEN)")
	}
	return s.Authenticate(tok)
}

// Authenticate checks a token (an API token or the cluster secret).
func (s *Server) Authenticate(tok string) (Identity, error) {
	hash := HashToken(tok)
	var id Identity
	found := false
	s.cfg.Raft.ReadStale(func(st *fsm.State) error {
		if st.Secret != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(st.Secret)) == 1 {
			id, found = Identity{Name: "node", TokenID: "node", Admin: true, Node: true}, true
			return nil
		}
		if t := st.TokenByHash(hash); t != nil {
			id, found = Identity{Name: t.Name, TokenID: t.ID, Admin: t.Role == fsm.RoleAdmin}, true
		}
		return nil
	})
	if !found {
		return Identity{}, httpx.Errorf(http.StatusUnauthorized, "unauthorized", "invalid token")
	}
	return id, nil
}

// requireAuth wraps h: the request must carry a valid token; admin
// additionally requires an admin token.
func (s *Server) requireAuth(admin bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.Identify(r)
		if err != nil {
			httpx.WriteError(w, err)
			return
		}
		if admin && !id.Admin {
			httpx.WriteError(w, httpx.Errorf(http.StatusForbidden, "forbidden", "this needs an admin token"))
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}
