package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/flist/hub"
	"github.com/zosproject/zos/internal/authz"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/orchestrator"
	zosapi "github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

// startBlockd starts the vdisk service and serves every vdisk over NBD.
func (n *Node) startBlockd(ln net.Listener) error {
	svc, err := blockd.New(blockd.Config{Node: n.id, Control: n.raft, StoreFor: n.storage.storeFor,
		JournalFor: n.storage.journalFor, Peers: blockdPeers{n},
		LeaseTTL: n.cfg.LeaseTTL, MaxDirtyBytes: n.cfg.WritebackCache, ExtentBytes: n.cfg.ExtentSize, Logger: n.cfg.Logger, Registerer: n.reg})
	if err != nil {
		return fmt.Errorf("node: blockd: %w", err)
	}
	n.blockd = svc
	tlsCfg, err := n.nbdTLS()
	if err != nil {
		svc.Close()
		return err
	}
	srv, err := nbd.New(nbd.Config{Exports: svc.Exports(), TLS: tlsCfg, RequireTLS: n.cfg.NBDTLSRequired,
		Logger: n.cfg.Logger, Registerer: n.reg})
	if err != nil {
		svc.Close()
		return fmt.Errorf("node: NBD server: %w", err)
	}
	n.nbd = srv
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(n.ctx, ln); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
			n.log.Error("NBD server stopped", "err", err)
		}
	}()
	// Closed in reverse order: the NBD server first (final flushes of its
	// connections), then the engines.
	n.closers = append(n.closers, svc.Close, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	return nil
}

// startAPI builds the HTTP API with every subsystem's routes and serves it.
func (n *Node) startAPI(ln net.Listener) error {
	tmp := filepath.Join(n.cfg.Dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	h := hub.New(hub.Config{Store: n.storage.store, Registry: flistRegistry{n.raft}, Metrics: n.reg,
		Logger: n.cfg.Logger.With("component", "hub"), TempDir: tmp,
		Authenticate: func(r *http.Request) (hub.Identity, error) {
			id, err := n.api.Identify(r)
			return hub.Identity{User: id.Name, Admin: id.IsAdmin(), Authorize: func(r *http.Request, names ...string) error {
				return n.api.Authorize(r, id, authz.Data, names...)
			}}, err
		}})
	n.hub = h
	var signNode func(string, []byte) ([]byte, []byte, error)
	if n.pki != nil {
		signNode = n.signNode
	}
	api, err := orchestrator.New(orchestrator.Config{Raft: n.raft, NodeID: n.id, Version: n.cfg.Version,
		Gatherer: n.reg, Registerer: n.reg, Ready: n.ready.Load, Logger: n.cfg.Logger, PeerTLS: n.peerTLS(), SignNode: signNode,
		Mount: []func(public, protected *http.ServeMux){
			func(public, protected *http.ServeMux) {
				// The hub's writes take an Idempotency-Key like the
				// API's own (the hub authenticates them itself).
				hubMux := http.NewServeMux()
				h.Register(hubMux)
				for _, rt := range hub.Routes {
					var hh http.Handler = hubMux
					if rt.Method != http.MethodGet {
						hh = n.idempotent(hubMux)
					}
					public.Handle(rt.Pattern(), hh)
				}
				blockd.RegisterHTTP(protected, n.blockd)
				public.Handle(zosapi.SyncVDisk.Pattern(), n.nodeOnly(httpx.Handler(n.syncVDisk)))
				n.storage.register(public, protected)
				n.tlsRoutes(public, protected)
			},
		}})
	if err != nil {
		return err
	}
	n.api = api
	n.http = &http.Server{Handler: n.internalOnlyNodes(api.Handler()), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return n.ctx }}
	if n.pki != nil {
		// HTTPS: the certificate is looked up per handshake (rotation).
		n.http.TLSConfig = n.pki.APIServerConfig()
		n.http.ErrorLog = n.tlsErrorLog()
		ln = tls.NewListener(ln, n.http.TLSConfig)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP API stopped", "err", err)
		}
	}()
	n.closers = append(n.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return n.http.Shutdown(ctx)
	})
	return nil
}

// idempotent makes the writes of a route that authenticates itself (the
// hub's) take an Idempotency-Key: a retry with the same key by the same
// token gets the first answer (orchestrator.Server.WithIdempotencyKey). A
// malformed key is refused in the hub's envelope. The API server is looked
// up per request, as in nodeOnly.
func (n *Node) idempotent(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, err := n.api.WithIdempotencyKey(r)
		if err != nil {
			hub.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// nodeOnly restricts h to other nodes (the cluster secret). The API server
// is looked up per request: routes are mounted while it is being built.
func (n *Node) nodeOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.api.RequireNode(h).ServeHTTP(w, r)
	})
}

// nbdTLS loads the NBD server's certificate (nil: no TLS).
func (n *Node) nbdTLS() (*tls.Config, error) {
	if n.cfg.NBDTLSCert == "" {
		if n.pki != nil {
			// STARTTLS with the node certificate of the cluster CA.
			return n.pki.PublicServerConfig(), nil
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(n.cfg.NBDTLSCert, n.cfg.NBDTLSKey)
	if err != nil {
		return nil, fmt.Errorf("node: NBD TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if n.cfg.NBDTLSClientCA != "" {
		pem, err := os.ReadFile(n.cfg.NBDTLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("node: NBD TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("node: NBD TLS client CA %s holds no certificate", n.cfg.NBDTLSClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// blockdPeers reaches the blockd of the other nodes over their internal
// HTTP API (blockd.Peers).
type blockdPeers struct{ n *Node }

// Sync asks node to commit vdisk name (POST /internal/v1/vdisks/NAME/sync).
func (p blockdPeers) Sync(ctx context.Context, node, name string) error {
	var api, secret string
	p.n.raft.ReadStale(func(st *fsm.State) error {
		if nd := st.Nodes[node]; nd != nil {
			api = nd.APIAddr
		}
		secret = st.Secret
		return nil
	})
	if api == "" {
		return fmt.Errorf("node: %s has no API address in the cluster map", node)
	}
	err := p.n.peerClient(api, secret).SyncVDisk(ctx, name)
	if client.IsCode(err, "not_attached") {
		return fmt.Errorf("%w: %v", blockd.ErrNotAttached, err)
	}
	return err
}

// syncVDisk commits a vdisk attached read-write here, for another node
// about to read its head (blockd.Service.SyncLocal).
func (n *Node) syncVDisk(w http.ResponseWriter, r *http.Request) error {
	err := n.blockd.SyncLocal(r.Context(), r.PathValue("name"))
	if errors.Is(err, blockd.ErrNotAttached) {
		return httpx.Errorf(http.StatusConflict, "not_attached", "%s", err.Error())
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
