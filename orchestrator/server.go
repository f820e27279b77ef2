package orchestrator

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zosproject/zos/internal/authz"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// Config configures the API server of one node.
type Config struct {
	Raft   *raft.Server
	NodeID string
	// Version is reported in the cluster status.
	Version string
	// MaxVoters caps the Raft voters; nodes joining beyond it are
	// non-voters. Default 5.
	MaxVoters int
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Registerer, if set, receives the API's metrics
	// (zos_api_auth_refusals_total).
	Registerer prometheus.Registerer
	// Ready reports whether the node serves (for /readyz).
	Ready  func() bool
	Logger *slog.Logger
	// Mount adds the routes of other packages: public routes go on the
	// first mux as they are (they authenticate themselves, e.g. the
	// hub), protected routes on the second, behind token authentication.
	Mount []func(public, protected *http.ServeMux)

	// PeerTLS, when set, is the client TLS configuration of requests to
	// other nodes (forwarding to the leader): they use https.
	PeerTLS *tls.Config
	// SignNode, when set, signs a joining node's certificate request: it
	// returns the node certificate and the CA certificate (PEM).
	SignNode func(nodeID string, csrPEM []byte) (certPEM, caPEM []byte, err error)
}

// Server is the HTTP API of one node.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	guard   *authz.Guard // logs and counts refusals
	fresh   *syncer      // linearizable token lookups
	// staleAuth counts token checks answered from the local replica
	// while no leader could be reached (zos_api_auth_stale_total);
	// staleLog keeps their warning to one line a minute.
	staleAuth prometheus.Counter
	staleLog  slogx.Rare

	peerOnce sync.Once
	peerRT   http.RoundTripper
}

// New builds the API server.
func New(cfg Config) (*Server, error) {
	if cfg.Raft == nil || cfg.NodeID == "" {
		return nil, errors.New("orchestrator: config needs Raft and NodeID")
	}
	if cfg.MaxVoters == 0 {
		cfg.MaxVoters = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slogx.Discard
	}
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "api", "node", cfg.NodeID),
		fresh: &syncer{read: cfg.Raft.Read, timeout: 10 * time.Second}}
	s.guard = authz.NewGuard(s.log, cfg.Registerer)
	s.staleAuth = prometheus.NewCounter(prometheus.CounterOpts{Name: "zos_api_auth_stale_total",
		Help: "API token checks answered from the node's replica because no Raft leader could be reached."})
	s.staleLog.Every = time.Minute
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.staleAuth); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			s.staleAuth = are.ExistingCollector.(prometheus.Counter)
		}
	}
	public := http.NewServeMux()
	protected := http.NewServeMux()

	public.HandleFunc(api.Healthz.Pattern(), func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": cfg.NodeID})
	})
	public.HandleFunc(api.Readyz.Pattern(), s.readyz)
	if cfg.Gatherer != nil {
		public.Handle(api.Metrics.Pattern(), s.requireAuth(authz.Read, promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	public.Handle(api.Forward.Pattern(), s.requireNode(httpx.Handler(s.forward)))

	protected.Handle(api.GetCluster.Pattern(), httpx.Handler(s.clusterStatus))
	protected.Handle(api.ListNodes.Pattern(), httpx.Handler(s.listNodes))
	protected.Handle(api.GetNode.Pattern(), httpx.Handler(s.getNode))
	protected.Handle(api.JoinNode.Pattern(), s.admin(s.leaderOnly(httpx.Handler(s.joinHandler))))
	protected.Handle(api.RemoveNode.Pattern(), s.admin(s.leaderOnly(httpx.Handler(s.removeHandler))))
	protected.Handle(api.PromoteNode.Pattern(), s.admin(s.leaderOnly(httpx.Handler(s.voterHandler(true)))))
	protected.Handle(api.DemoteNode.Pattern(), s.admin(s.leaderOnly(httpx.Handler(s.voterHandler(false)))))
	protected.Handle(api.ListTokens.Pattern(), s.admin(httpx.Handler(s.listTokens)))
	protected.Handle(api.CreateToken.Pattern(), s.admin(httpx.Handler(s.createToken)))
	protected.Handle(api.DeleteToken.Pattern(), s.admin(httpx.Handler(s.deleteToken)))
	protected.Handle(api.ListPools.Pattern(), httpx.Handler(s.listPools))
	protected.Handle(api.CreatePool.Pattern(), s.admin(httpx.Handler(s.createPool)))
	protected.Handle(api.DeletePool.Pattern(), s.admin(httpx.Handler(s.deletePool)))

	s.mountKV(protected)
	for _, m := range cfg.Mount {
		m(public, protected)
	}
	// Everything not public goes through authentication first. The
	// patterns carry methods so that they are more specific than the
	// hub's "GET /{repo}/{file...}" download route.
	// Every protected route is at least of scope Read (a reader may only
	// GET); the routes of other scopes check theirs themselves.
	auth := s.requireAuth(authz.Read, s.idempotent(protected))
	named := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := protected.Handler(r); pattern != "" {
			r = r.WithContext(r.Context())
			r.Pattern = pattern // refusals log the route, not "/api/v1/"
		}
		auth.ServeHTTP(w, r)
	})
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
		public.Handle(m+" /api/v1/", named)
	}
	s.handler = s.logRequests(public)
	return s, nil
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// admin wraps h, a route behind requireAuth, with a check of scope
// Manage: tokens, membership, pools and kv need an admin token.
func (s *Server) admin(h http.Handler) http.Handler { return scoped(authz.Manage, h) }

// RequireNode wraps h: only nodes (the cluster secret) may call it.
func (s *Server) RequireNode(h http.Handler) http.Handler { return s.requireNode(h) }

func (s *Server) requireNode(h http.Handler) http.Handler {
	return s.requireAuth(authz.Internal, h)
}

func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := httpx.NewStatusWriter(w)
		h.ServeHTTP(sw, r)
		if r.URL.Path == api.Healthz.Path || r.URL.Path == api.Readyz.Path || r.URL.Path == api.Forward.Path {
			return
		}
		level := slog.LevelDebug
		if sw.Status() >= 500 {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", sw.Status(), "duration", time.Since(start))
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	leader, _ := s.cfg.Raft.Leader()
	if leader == "" || !s.cfg.Ready() {
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "leader": leader})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "leader": leader})
}

// forward serves raft requests forwarded by followers.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) error {
	var req raft.ForwardRequest
	if err := httpx.DecodeJSON(r, &req); err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, s.cfg.Raft.HandleForward(r.Context(), &req))
	return nil
}

// leaderOnly proxies the request to the leader's API unless this node leads.
func (s *Server) leaderOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Raft.IsLeader() {
			h.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("X-Zos-Forwarded") != "" {
			httpx.WriteError(w, httpx.Errorf(http.StatusServiceUnavailable, "no_leader", "leadership is changing; retry"))
			return
		}
		target, err := s.leaderAPI(r.Context())
		if err != nil {
			httpx.WriteError(w, err)
			return
		}
		p := &httputil.ReverseProxy{
			Transport: s.peerTransport(),
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Header.Set("X-Zos-Forwarded", s.cfg.NodeID)
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				var op *net.OpError
				if errors.As(err, &op) && op.Op == "dial" {
					httpx.WriteError(w, httpx.Errorf(http.StatusBadGateway, "no_leader", "leader at %s unreachable: %v", target.Host, err))
					return
				}
				// The leader may have acted on it before the answer was lost.
				httpx.WriteError(w, httpx.Errorf(http.StatusServiceUnavailable, fsm.ErrOutcomeUnknown.Code,
					"the leader at %s did not answer (%v): the request may or may not have been applied; retry with the same Idempotency-Key, or check before retrying", target.Host, err))
			},
		}
		p.ServeHTTP(w, r)
	})
}

func (s *Server) leaderAPI(ctx context.Context) (*url.URL, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		id, _ := s.cfg.Raft.Leader()
		var api string
		if id != "" && id != s.cfg.NodeID {
			s.cfg.Raft.ReadStale(func(st *fsm.State) error {
				if n := st.Nodes[id]; n != nil {
					api = n.APIAddr
				}
				return nil
			})
		}
		if api != "" {
			if s.cfg.PeerTLS != nil {
				return &url.URL{Scheme: "https", Host: api}, nil
			}
			return &url.URL{Scheme: "http", Host: api}, nil
		}
		if time.Now().After(deadline) {
			return nil, httpx.Errorf(http.StatusServiceUnavailable, "no_leader", "no leader known; is a majority of voters up?")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// read runs fn on a linearizable view of the state.
func (s *Server) read(ctx context.Context, fn func(*fsm.State) error) error {
	if err := s.cfg.Raft.Read(ctx, fn); err != nil {
		if errors.Is(err, raft.ErrNoLeader) || errors.Is(err, raft.ErrNotLeader) {
			return httpx.Errorf(http.StatusServiceUnavailable, "no_leader", "%v", err)
		}
		return err
	}
	return nil
}

// apply proposes op through s's Raft server, for a handler that needs no
// result; see applyErr.
func apply[A, R any](ctx context.Context, s *Server, op fsm.Op[A, R], args A) error {
	err := raft.Exec(ctx, s.cfg.Raft, op, args)
	return s.applyErr(err)
}

// applyErr turns "no leader" conditions into 503s the client may retry.
func (s *Server) applyErr(err error) error {
	if err != nil && (errors.Is(err, raft.ErrNoLeader) || errors.Is(err, raft.ErrNotLeader)) {
		return httpx.Errorf(http.StatusServiceUnavailable, "no_leader", "%v", err)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return httpx.Errorf(http.StatusServiceUnavailable, "no_quorum", "no commit before the deadline (is a majority of voters reachable?): %v", err)
	}
	return err
}

func pathErr(format string, args ...any) error {
	return httpx.Errorf(http.StatusNotFound, "not_found", format, args...)
}
