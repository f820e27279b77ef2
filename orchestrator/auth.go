package orchestrator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/zosproject/zos/internal/authz"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// Identity is who made a request: the token's name, id, role and name
// prefixes, or a node (the cluster secret). What it may do is decided by
// internal/authz.
type Identity = authz.Principal

// IdentityFrom returns the identity of an authenticated request.
func IdentityFrom(ctx context.Context) (Identity, bool) { return authz.FromContext(ctx) }

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

// Identify authenticates a request. A refusal (no token, an unknown or
// revoked one) is logged and counted with the token's id.
func (s *Server) Identify(r *http.Request) (Identity, error) {
	tok := bearer(r)
	if tok == "" {
		return Identity{}, s.guard.Refuse(r, "", &authz.Refusal{Reason: authz.NoToken, Msg: "missing bearer token (set ZOS_TOKEN)"})
	}
	id, err := s.AuthenticateContext(r.Context(), tok)
	var ref *authz.Refusal
	if errors.As(err, &ref) {
		return Identity{}, s.guard.Refuse(r, claimedID(tok), ref)
	}
	return id, err
}

// claimedID is the id part of a token string "zos_<id>_<secret>", for
// logging a refused token without its secret ("" if tok has no such
// form).
func claimedID(tok string) string {
	rest, ok := strings.CutPrefix(tok, "zos_")
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 8 || strings.Trim(id, "0123456789abcdef") != "" {
		return ""
	}
	return id
}

// Authenticate checks a token (an API token or the cluster secret); see
// AuthenticateContext. An unknown token is an *httpx.Error 401.
func (s *Server) Authenticate(tok string) (Identity, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := s.AuthenticateContext(ctx, tok)
	var ref *authz.Refusal
	if errors.As(err, &ref) {
		return Identity{}, httpx.Errorf(ref.Status(), "unauthorized", "%s", ref.Msg)
	}
	return id, err
}

// AuthenticateContext checks a token. The cluster secret is checked on
// the local replica (it never changes, and nodes use it to reach the
// leader). An API token is looked up after a linearizable read of the
// token table (one read index round trip, shared by the requests that
// arrive while one is in flight): a token deleted on any node is refused
// by every node as soon as the delete returns, and one just created is
// accepted everywhere. Without a reachable leader (no Raft majority) the
// token is looked up on the local replica instead, counted in
// zos_api_auth_stale_total: nothing can be revoked then, and the data
// (blobs, vdisk reads) stays reachable. An unknown (or revoked) token is
// an *authz.Refusal.
func (s *Server) AuthenticateContext(ctx context.Context, tok string) (Identity, error) {
	node := false
	s.cfg.Raft.ReadStale(func(st *fsm.State) error {
		node = st.Secret != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(st.Secret)) == 1
		return nil
	})
	if node {
		return Identity{Name: "node", TokenID: "node", Role: authz.Admin, Node: true}, nil
	}
	if id, _ := s.cfg.Raft.Leader(); id == "" {
		// No leader known: no revocation can commit either, so the
		// replica is as fresh as the cluster can be (but for a delete
		// committed just before the leader was lost and not yet applied
		// here). The data stays reachable without a Raft majority, as
		// the store promises (reads with up to m nodes lost).
		s.noteStaleAuth()
	} else if err := s.fresh.sync(ctx); err != nil {
		if !noLeader(err) {
			return Identity{}, s.readErr(err, "could not check the token with the leader")
		}
		s.noteStaleAuth()
	}
	hash := HashToken(tok)
	var id Identity
	found := false
	s.cfg.Raft.ReadStale(func(st *fsm.State) error {
		if t := st.TokenByHash(hash); t != nil {
			id = Identity{Name: t.Name, TokenID: t.ID, Role: authz.Role(t.EffectiveRole()), Prefixes: slices.Clone(t.Prefixes)}
			found = true
		}
		return nil
	})
	if !found {
		return Identity{}, &authz.Refusal{Reason: authz.InvalidToken, Msg: "invalid token (unknown or revoked)"}
	}
	return id, nil
}

// requireAuth wraps h: the request must carry a valid token that may call
// a route of scope (authz.Decide, with no names: a handler that knows the
// names it touches checks them with authz.Require). h runs with the
// identity and the guard in its context.
func (s *Server) requireAuth(scope authz.Scope, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.Identify(r)
		if err != nil {
			httpx.WriteError(w, err)
			return
		}
		if err := s.guard.Check(r, id, scope); err != nil {
			httpx.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(authz.NewContext(r.Context(), id, s.guard)))
	})
}

// Authorize decides whether id may call r's route of scope touching the
// resources names, and logs and counts a refusal; for handlers that
// authenticate by themselves (the hub's).
func (s *Server) Authorize(r *http.Request, id Identity, scope authz.Scope, names ...string) error {
	return s.guard.Check(r, id, scope, names...)
}

// scoped wraps h, behind requireAuth, with a check of scope.
func scoped(scope authz.Scope, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := authz.Require(r, scope); err != nil {
			httpx.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// readErr maps a failed freshness read: no leader or quorum is a 503 the
// client may retry.
// noteStaleAuth counts, and now and then logs, a token check answered
// from the local replica.
func (s *Server) noteStaleAuth() {
	s.staleAuth.Inc()
	if n, _, log := s.staleLog.Note(); log {
		s.log.Warn("no Raft leader: API tokens checked on this node's replica (a revocation not yet applied here is not seen)", "checks", n)
	}
}

func noLeader(err error) bool {
	return errors.Is(err, raft.ErrNoLeader) || errors.Is(err, raft.ErrNotLeader) || errors.Is(err, context.DeadlineExceeded)
}

func (s *Server) readErr(err error, what string) error {
	switch {
	case errors.Is(err, raft.ErrNoLeader), errors.Is(err, raft.ErrNotLeader), errors.Is(err, context.DeadlineExceeded):
		return httpx.Errorf(http.StatusServiceUnavailable, "no_leader", "%s: %v (is a majority of voters reachable?)", what, err)
	}
	return err
}
