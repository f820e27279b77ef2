// Package authz decides what an API caller may do. One pure function,
// Decide, maps (who calls, the scope of the route, the method, the names of
// the resources touched) to "allowed" or a Refusal; every handler of a
// node's API asks it, directly (Guard.Check) or through the request's
// context (Require), so the rules live here and nowhere else:
//
//   - Scope Internal: the cluster secret only (other nodes).
//   - Scope Manage (tokens, membership, pools, kv): admin.
//   - A reader may only GET (and HEAD), whatever the scope.
//   - Scope Read (cluster status, node list, metrics): any token.
//   - Scope Data (vdisks, flists, store content, workloads): operator or
//     admin; a token limited to name prefixes may only touch names that
//     start with one of them — every name: a clone's source and target,
//     a merge's target.
//   - Scope Store (cluster-wide store maintenance: scrub, gc, unpin):
//     operator or admin, but not a prefix-limited token, since such a
//     request touches every name.
//
// The caller (orchestrator) authenticates a request, then stores the
// Principal and the Guard in its context (NewContext); a handler that
// learns the names it touches only from the body calls Require(r, scope,
// names...). A refusal is logged by the Guard with the token's id (never
// its secret), the route and the reason, and counted in
// zos_api_auth_refusals_total{reason}.
package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/internal/httpx"
)

// Role is what a token may do.
type Role string

// Roles.
const (
	Admin    Role = "admin"
	Operator Role = "operator"
	Reader   Role = "reader"
)

// Principal is who makes a request.
type Principal struct {
	// Name is the token's name (the hub's "me" repository), "node" for the
	// cluster secret.
	Name string
	// TokenID is the token's stored id ("node" for the cluster secret):
	// what refusals log and what scopes Idempotency-Keys. Never the
	// secret.
	TokenID string
	Role    Role
	// Prefixes, if any, limit the names of the vdisks and flists the
	// principal may touch.
	Prefixes []string
	// Node: authenticated with the cluster secret (another node).
	Node bool
}

// IsAdmin reports whether p may do everything but the internal routes.
func (p Principal) IsAdmin() bool { return p.Node || p.Role == Admin }

// Matches reports whether p may touch the resource called name: p has no
// prefixes, or name starts with one of them.
func (p Principal) Matches(name string) bool {
	if len(p.Prefixes) == 0 || p.Node || p.Role == Admin {
		return true
	}
	for _, pre := range p.Prefixes {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return false
}

// Scope is what a route touches.
type Scope int

// Scopes.
const (
	Read     Scope = iota // cluster status, node and pool lists, metrics
	Data                  // vdisks, flists, store content, workloads
	Store                 // cluster-wide store maintenance
	Manage                // tokens, membership, pools, kv
	Internal              // node-to-node routes
)

var scopeNames = [...]string{"read", "data", "store", "manage", "internal"}

func (s Scope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return fmt.Sprintf("scope(%d)", int(s))
}

// Reason says why a request was refused: the label of
// zos_api_auth_refusals_total.
type Reason string

// Reasons.
const (
	NoToken      Reason = "missing_token" // 401
	InvalidToken Reason = "invalid_token" // 401: unknown or revoked
	ReadOnly     Reason = "read_only"     // 403: a reader's non-GET request
	WrongRole    Reason = "role"          // 403: the route needs a higher role
	Prefix       Reason = "prefix"        // 403: a name outside the token's prefixes
	NodesOnly    Reason = "nodes_only"    // 403: an internal route
)

// Refusal is a decision against a request.
type Refusal struct {
	Reason Reason
	Msg    string
}

func (r *Refusal) Error() string { return "authz: " + r.Msg }

// Status is the HTTP status of the refusal: 401 for authentication, 403
// for the rest.
func (r *Refusal) Status() int {
	if r.Reason == NoToken || r.Reason == InvalidToken {
		return http.StatusUnauthorized
	}
	return http.StatusForbidden
}

func refuse(reason Reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// readMethod reports whether method only reads.
func readMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead
}

// Decide is the policy: nil if p may call a route of scope with method,
// touching the resources names (vdisk names, flist names), else why not.
func Decide(p Principal, scope Scope, method string, names ...string) *Refusal {
	if scope == Internal {
		if !p.Node {
			return refuse(NodesOnly, "internal API: nodes only")
		}
		return nil
	}
	if p.IsAdmin() {
		return nil
	}
	if scope == Manage {
		return refuse(WrongRole, "this needs an admin token (this one is %s)", p.Role)
	}
	if p.Role == Reader && !readMethod(method) {
		return refuse(ReadOnly, "a reader token may only read (GET); %s needs an operator token", method)
	}
	if p.Role != Operator && p.Role != Reader {
		return refuse(WrongRole, "token role %q is unknown here", p.Role)
	}
	if len(p.Prefixes) == 0 {
		return nil
	}
	if scope == Store && !readMethod(method) {
		return refuse(Prefix, "a token limited to names starting with %s cannot run cluster-wide store maintenance", strings.Join(p.Prefixes, ", "))
	}
	for _, n := range names {
		if !p.Matches(n) {
			return refuse(Prefix, "%q is outside this token's names (starting with %s)", n, strings.Join(p.Prefixes, ", "))
		}
	}
	return nil
}

// Guard reports refusals: a log line (token id, route, reason) and the
// zos_api_auth_refusals_total counter. A nil *Guard only decides.
type Guard struct {
	log      *slog.Logger
	refusals *prometheus.CounterVec
}

// NewGuard returns a Guard logging to log and registering its counter
// with reg (if not nil).
func NewGuard(log *slog.Logger, reg prometheus.Registerer) *Guard {
	g := &Guard{log: log.With("component", "authz"),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "zos", Subsystem: "api", Name: "auth_refusals_total",
			Help: "API requests refused by authentication (401) or authorization (403), by reason."}, []string{"reason"})}
	if reg != nil {
		if err := reg.Register(g.refusals); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				g.refusals = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	for _, r := range []Reason{NoToken, InvalidToken, ReadOnly, WrongRole, Prefix, NodesOnly} {
		g.refusals.WithLabelValues(string(r))
	}
	return g
}

// Check decides (Decide) and reports a refusal; the error is an
// *httpx.Error with the refusal's status.
func (g *Guard) Check(r *http.Request, p Principal, scope Scope, names ...string) error {
	if ref := Decide(p, scope, r.Method, names...); ref != nil {
		return g.Refuse(r, p.TokenID, ref)
	}
	return nil
}

// Refuse reports ref for the request r by the token tokenID ("" when the
// request carries none) and returns the error to answer with.
func (g *Guard) Refuse(r *http.Request, tokenID string, ref *Refusal) error {
	if g != nil {
		g.refusals.WithLabelValues(string(ref.Reason)).Inc()
		route := r.Pattern
		if route == "" {
			route = r.Method + " " + r.URL.Path
		}
		g.log.Warn("request refused", "token", tokenID, "route", route, "path", r.URL.Path,
			"status", ref.Status(), "reason", string(ref.Reason), "why", ref.Msg, "remote", r.RemoteAddr)
	}
	code := "forbidden"
	if ref.Status() == http.StatusUnauthorized {
		code = "unauthorized"
	}
	return httpx.Errorf(ref.Status(), code, "%s", ref.Msg)
}

type ctxKey struct{}

type decided struct {
	p Principal
	g *Guard
}

// NewContext returns ctx carrying the authenticated principal p and the
// guard g that reports refusals.
func NewContext(ctx context.Context, p Principal, g *Guard) context.Context {
	return context.WithValue(ctx, ctxKey{}, decided{p, g})
}

// FromContext returns the principal of an authenticated request.
func FromContext(ctx context.Context) (Principal, bool) {
	d, ok := ctx.Value(ctxKey{}).(decided)
	return d.p, ok
}

// Require checks that the principal of r (NewContext) may call r's route
// of scope touching names. A request without a principal is allowed: it
// was not routed through an authenticating server (a package's own tests
// mount its handlers on a bare mux); a node's API always sets one.
func Require(r *http.Request, scope Scope, names ...string) error {
	d, ok := r.Context().Value(ctxKey{}).(decided)
	if !ok {
		return nil
	}
	return d.g.Check(r, d.p, scope, names...)
}

// Visible reports whether the principal of ctx may see the resource name
// (lists show a prefix-limited token only its names). True without a
// principal.
func Visible(ctx context.Context, name string) bool {
	p, ok := FromContext(ctx)
	return !ok || p.Matches(name)
}
