package orchestrator

import (
	"io"
	"net/http"
	"sort"
	"strconv"

	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/orchestrator/api"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

func (s *Server) mountKV(protected *http.ServeMux) {
	protected.Handle(api.ListKV.Pattern(), s.admin(httpx.Handler(s.kvList)))
	protected.Handle(api.GetKV.Pattern(), s.admin(httpx.Handler(s.kvGet)))
	protected.Handle(api.PutKV.Pattern(), s.admin(httpx.Handler(s.kvPut)))
	protected.Handle(api.DeleteKV.Pattern(), s.admin(httpx.Handler(s.kvDelete)))
}

// readMode reads linearizably unless ?stale=true asks for the local replica.
func (s *Server) readMode(r *http.Request, fn func(*fsm.State) error) error {
	if r.URL.Query().Get("stale") == "true" {
		return s.cfg.Raft.ReadStale(fn)
	}
	return s.read(r.Context(), fn)
}

func (s *Server) kvList(w http.ResponseWriter, r *http.Request) error {
	ns := r.PathValue("ns")
	var out []KVEntry
	if err := s.readMode(r, func(st *fsm.State) error {
		for k, v := range st.KV[ns] {
			out = append(out, KVEntry{Key: k, Value: v.Value, Version: v.Version})
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) kvGet(w http.ResponseWriter, r *http.Request) error {
	ns, key := r.PathValue("ns"), r.PathValue("key")
	var out *KVEntry
	if err := s.readMode(r, func(st *fsm.State) error {
		if v := st.KV[ns][key]; v != nil {
			out = &KVEntry{Key: key, Value: v.Value, Version: v.Version}
		}
		return nil
	}); err != nil {
		return err
	}
	if out == nil {
		return pathErr("no key %s/%s", ns, key)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// kvPut stores the raw body; ?if_version=N makes it a compare-and-swap.
func (s *Server) kvPut(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, fsm.MaxKVValue+1))
	if err != nil {
		return httpx.BadRequest("value larger than %d bytes", fsm.MaxKVValue)
	}
	args := fsm.KVPutArgs{NS: r.PathValue("ns"), Key: r.PathValue("key"), Value: body}
	if v := r.URL.Query().Get("if_version"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return httpx.BadRequest("if_version %q is not a number", v)
		}
		args.IfVersion = &n
	}
	res, err := raft.Apply(r.Context(), s.cfg.Raft, fsm.KVPut, args)
	if err != nil {
		return s.applyErr(err)
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) kvDelete(w http.ResponseWriter, r *http.Request) error {
	if err := apply(r.Context(), s, fsm.KVDelete, fsm.KVDeleteArgs{NS: r.PathValue("ns"), Key: r.PathValue("key")}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// KVEntry is one key of the generic namespace (defined in orchestrator/api).
type KVEntry = api.KVEntry
