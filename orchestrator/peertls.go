package orchestrator

import (
	"net/http"
	"time"
)

// peerTransport is the HTTP transport of requests to other nodes: over
// Config.PeerTLS when set (mutual TLS with this node's certificate).
func (s *Server) peerTransport() http.RoundTripper {
	s.peerOnce.Do(func() {
		if s.cfg.PeerTLS == nil {
			s.peerRT = http.DefaultTransport
			return
		}
		s.peerRT = &http.Transport{TLSClientConfig: s.cfg.PeerTLS, ForceAttemptHTTP2: true,
			MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	})
	return s.peerRT
}
