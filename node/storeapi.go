package node

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/internal/authz"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// The store API: blobs in and out, where a chunk's shards are, cluster
// status with rebuild progress, scrub and garbage collection.
func (s *storage) register(public, protected *http.ServeMux) {
	protected.Handle(api.PutBlob.Pattern(), httpx.Handler(s.putBlob))
	protected.Handle(api.GetBlob.Pattern(), httpx.Handler(s.getBlob))
	protected.Handle(api.StatChunk.Pattern(), httpx.Handler(s.statChunk))
	protected.Handle(api.StatBlob.Pattern(), httpx.Handler(s.statBlob))
	protected.Handle(api.GetStoreStatus.Pattern(), httpx.Handler(s.status))
	protected.Handle(api.Scrub.Pattern(), storeScope(httpx.Handler(s.scrubAll)))
	protected.Handle(api.GC.Pattern(), storeScope(httpx.Handler(s.collectHandler)))
	protected.Handle(api.ListPins.Pattern(), httpx.Handler(s.listPins))
	protected.Handle(api.Unpin.Pattern(), storeScope(httpx.Handler(s.unpin)))
	public.Handle(api.LocalStore.Pattern(), s.n.nodeOnly(httpx.Handler(s.localStatus)))
	public.Handle(api.LocalScrub.Pattern(), s.n.nodeOnly(httpx.Handler(s.scrubLocal)))
	public.Handle(api.LocalHeal.Pattern(), s.n.nodeOnly(httpx.Handler(s.healLocal)))
}

// storeScope wraps a cluster-wide store maintenance route: operator or
// admin, not a token limited to name prefixes (authz.Store).
func storeScope(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := authz.Require(r, authz.Store); err != nil {
			httpx.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// putBlob stores the request body as a blob (chunks plus manifests) and
// pins it, so the garbage collector keeps it (?pin=false does not).
func (s *storage) putBlob(w http.ResponseWriter, r *http.Request) error {
	pool := r.URL.Query().Get("pool")
	if pool == "" {
		pool = fsm.DefaultPool
	}
	var size int64
	ref, err := blob.Write(r.Context(), s.storeFor(pool, ""), r.Body, func(n int64) { size = n })
	if err != nil {
		return err
	}
	pin := r.URL.Query().Get("pin") != "false"
	if pin {
		if err := raft.Exec(r.Context(), s.n.raft, fsm.PinAdd, fsm.PinArgs{Ref: ref, Note: r.URL.Query().Get("note")}); err != nil {
			return err
		}
	}
	httpx.WriteJSON(w, http.StatusCreated, PutBlobResponse{Ref: ref, Size: size, Pinned: pin})
	return nil
}

func refParam(r *http.Request) (chunkstore.Ref, error) {
	ref, err := chunkstore.ParseRef(r.PathValue("ref"))
	if err != nil {
		return ref, httpx.BadRequest("%v", err)
	}
	return ref, nil
}

// getBlob streams a blob; Range requests are served from the chunks they
// touch.
func (s *storage) getBlob(w http.ResponseWriter, r *http.Request) error {
	ref, err := refParam(r)
	if err != nil {
		return err
	}
	br, err := blob.Open(r.Context(), s.store, ref)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+ref.String()+`"`)
	http.ServeContent(w, r, "", time.Time{}, br)
	return nil
}

func (s *storage) statChunk(w http.ResponseWriter, r *http.Request) error {
	ref, err := refParam(r)
	if err != nil {
		return err
	}
	st, err := s.store.Inspect(r.Context(), ref)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, st)
	return nil
}

func (s *storage) statBlob(w http.ResponseWriter, r *http.Request) error {
	ref, err := refParam(r)
	if err != nil {
		return err
	}
	out := BlobStatus{Ref: ref}
	add := func(c chunkstore.Ref) error {
		st, err := s.store.Inspect(r.Context(), c)
		if err != nil {
			return err
		}
		switch {
		case !st.Readable:
			out.Unreadable++
		case st.Degraded:
			out.Degraded++
		default:
			out.Healthy++
		}
		out.Chunks = append(out.Chunks, st)
		return nil
	}
	if err := blob.Refs(r.Context(), s.store, ref, add); err != nil {
		if len(out.Chunks) == 0 {
			return err
		}
		// A blob whose manifest cannot be read still reports what it has.
		out.Unreadable++
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func summarize(local []LocalStatus) PendingSummary {
	var out PendingSummary
	idx := map[string]int{}
	for _, l := range local {
		out.Chunks += l.Pending.Chunks
		out.Repaired += l.Pending.Repaired
		for _, pn := range l.Pending.Nodes {
			out.Dropped += pn.Dropped
			i, ok := idx[pn.Node]
			if !ok {
				i = len(out.Nodes)
				idx[pn.Node] = i
				out.Nodes = append(out.Nodes, erasure.PendingNode{Node: pn.Node, Since: pn.Since})
			}
			sum := &out.Nodes[i]
			sum.Chunks += pn.Chunks
			sum.Dropped += pn.Dropped
			if pn.Since.Before(sum.Since) {
				sum.Since = pn.Since
			}
			if pn.LastError != "" {
				sum.LastError = pn.LastError
			}
		}
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Node < out.Nodes[j].Node })
	return out
}

func (s *storage) localStatus(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.local1())
	return nil
}

func (s *storage) local1() LocalStatus {
	return LocalStatus{Node: s.n.id, Heal: s.healer.Progress(), Scrub: s.scrub.Progress(), Pending: s.store.Pending()}
}

// healLocal asks this node's heal loop for a pass (another node's degraded
// writes overflowed its pending repairs).
func (s *storage) healLocal(w http.ResponseWriter, r *http.Request) error {
	s.kickHeal()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// fanout calls fn on every node that is not removed (this one locally) and
// collects the answers in node order.
func (s *storage) fanout(ctx context.Context, local func() any, remote func(c *client.Client) (any, error)) []any {
	type target struct{ id, api string }
	var targets []target
	var secret string
	s.n.raft.ReadStale(func(st *fsm.State) error {
		secret = st.Secret
		for _, nd := range st.SortedNodes() {
			if nd.State != fsm.NodeRemoved {
				targets = append(targets, target{nd.ID, nd.APIAddr})
			}
		}
		return nil
	})
	out := make([]any, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		if t.id == s.n.id {
			out[i] = local()
			continue
		}
		wg.Add(1)
		go func(i int, t target) {
			defer wg.Done()
			v, err := remote(s.n.peerClient(t.api, secret))
			if err != nil {
				v = LocalStatus{Node: t.id, Error: err.Error()}
			}
			out[i] = v
		}(i, t)
	}
	wg.Wait()
	return out
}

func (s *storage) status(w http.ResponseWriter, r *http.Request) error {
	census := r.URL.Query().Get("census") != "false"
	st, err := s.store.Status(r.Context(), census)
	if err != nil {
		return err
	}
	out := StoreStatus{Status: st}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	for _, v := range s.fanout(ctx, func() any { return s.local1() }, func(c *client.Client) (any, error) {
		var ls LocalStatus
		ls, err := c.LocalStoreStatus(ctx)
		return ls, err
	}) {
		out.Local = append(out.Local, v.(LocalStatus))
	}
	out.Pending = summarize(out.Local)
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *storage) scrubLocal(w http.ResponseWriter, r *http.Request) error {
	res, err := s.scrub.Run(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, ScrubResult{Node: s.n.id, Result: res})
	return nil
}

// scrubAll scrubs every node now, in parallel, and reports each result.
func (s *storage) scrubAll(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var out []ScrubResult
	for _, v := range s.fanout(ctx, func() any {
		res, err := s.scrub.Run(ctx)
		sr := ScrubResult{Node: s.n.id, Result: res}
		if err != nil {
			sr.Error = err.Error()
		}
		return sr
	}, func(c *client.Client) (any, error) {
		var sr ScrubResult
		sr, err := c.ScrubLocal(ctx)
		return sr, err
	}) {
		switch x := v.(type) {
		case ScrubResult:
			out = append(out, x)
		case LocalStatus:
			out = append(out, ScrubResult{Node: x.Node, Error: x.Error})
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *storage) collectHandler(w http.ResponseWriter, r *http.Request) error {
	dry, _ := strconv.ParseBool(r.URL.Query().Get("dry_run"))
	res, err := s.collect(r.Context(), dry)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *storage) listPins(w http.ResponseWriter, r *http.Request) error {
	var out []PinInfo
	if err := s.n.raft.Read(r.Context(), func(st *fsm.State) error {
		for _, p := range st.Pins {
			out = append(out, PinInfo{Ref: p.Ref, Note: p.Note, Created: p.Created})
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created < out[j].Created })
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *storage) unpin(w http.ResponseWriter, r *http.Request) error {
	ref, err := refParam(r)
	if err != nil {
		return err
	}
	if err := raft.Exec(r.Context(), s.n.raft, fsm.PinRemove, fsm.PinArgs{Ref: ref}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// The JSON shapes of the store routes are defined in orchestrator/api.
type (
	PutBlobResponse = api.PutBlobResponse
	BlobStatus      = api.BlobStatus
	LocalStatus     = api.LocalStatus
	StoreStatus     = api.StoreStatus
	PendingSummary  = api.PendingSummary
	ScrubResult     = api.ScrubResult
	PinInfo         = api.PinInfo
)
