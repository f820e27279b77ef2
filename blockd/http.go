package blockd

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/vdiskapi"
	"github.com/zosproject/zos/internal/authz"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/internal/size"
)

// Size is a byte count that decodes from a JSON number or a string with a
// binary unit ("10G", "512M", "1T", "4096"); see internal/size.
type Size = vdiskapi.Size

// apiError maps blockd errors to API errors (control-plane and chunk store
// errors are mapped by httpx).
func apiError(err error) error {
	var he *httpx.Error
	switch {
	case err == nil || errors.As(err, &he):
		return err
	case errors.Is(err, ErrInvalid):
		return httpx.Errorf(http.StatusBadRequest, "invalid", "%s", err.Error())
	case errors.Is(err, nbd.ErrAttached):
		return httpx.Errorf(http.StatusLocked, "leased", "%s", err.Error())
	case errors.Is(err, ErrBusy):
		return httpx.Errorf(http.StatusLocked, "busy", "%s", err.Error())
	case errors.Is(err, ErrLeaseLost):
		return httpx.Errorf(http.StatusConflict, "stale_epoch", "%s", err.Error())
	case errors.Is(err, ErrClosed):
		return httpx.Errorf(http.StatusServiceUnavailable, "unavailable", "%s", err.Error())
	}
	return err
}

// handler adapts a handler returning an error, mapping it with apiError.
func handler(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return httpx.Handler(func(w http.ResponseWriter, r *http.Request) error { return apiError(fn(w, r)) })
}

// The request and answer bodies are defined in blockd/vdiskapi.
type (
	createRequest   = vdiskapi.CreateRequest
	resizeRequest   = vdiskapi.ResizeRequest
	snapshotRequest = vdiskapi.SnapshotRequest
	rollbackRequest = vdiskapi.RollbackRequest
	cloneRequest    = vdiskapi.CloneRequest
	// DiffAnswer is the JSON of GET /api/v1/vdisks/{name}/diff.
	DiffAnswer = vdiskapi.DiffAnswer
)

// RegisterHTTP adds the vdisk API to mux, under /api/v1/vdisks:
//
//	GET    /api/v1/vdisks                          list
//	POST   /api/v1/vdisks                          create: JSON {name, size, block_size, type, pool, from}; or a raw
//	                                               image body (application/octet-stream) with the same fields as query
//	                                               parameters (size defaults to the Content-Length rounded up to 512)
//	GET    /api/v1/vdisks/{name}                   info (with allocated bytes)
//	DELETE /api/v1/vdisks/{name}[?force=true]      delete
//	POST   /api/v1/vdisks/{name}/resize            {size, force}
//	GET    /api/v1/vdisks/{name}/snapshots         list snapshots
//	POST   /api/v1/vdisks/{name}/snapshots         {name}: take a snapshot
//	DELETE /api/v1/vdisks/{name}/snapshots/{snap}  delete a snapshot
//	POST   /api/v1/vdisks/{name}/rollback          {snapshot}
//	POST   /api/v1/vdisks/{name}/clone             {snapshot, name, type}: clone into a new vdisk
//	GET    /api/v1/vdisks/{name}/export[?snap=S]   raw image stream, with Content-Length
//	PUT    /api/v1/vdisks/{name}/import            raw image body: replaces the content
//	GET    /api/v1/vdisks/{name}/diff?from=A&to=B  changed byte ranges between snapshots (to="" is the head)
//
// Sizes in JSON are bytes or strings like "10G". Errors use httpx's shape;
// callers are authenticated by the wrapping mux, and every handler asks
// internal/authz (scope Data) about the vdisks it touches: the path's, a
// clone's target and a create's source too. The list shows a
// prefix-limited token only its vdisks.
func RegisterHTTP(mux *http.ServeMux, svc *Service) {
	mux.Handle(vdiskapi.List.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data); err != nil {
			return err
		}
		list, err := svc.ListVDisks(r.Context())
		if err != nil {
			return err
		}
		list = slices.DeleteFunc(list, func(v VDiskInfo) bool { return !authz.Visible(r.Context(), v.Name) })
		httpx.WriteJSON(w, http.StatusOK, list)
		return nil
	}))
	mux.Handle(vdiskapi.Create.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		return createHandler(svc, w, r)
	}))
	mux.Handle(vdiskapi.Get.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		info, err := svc.Get(r.Context(), r.PathValue("name"), true)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, info)
		return nil
	}))
	mux.Handle(vdiskapi.Delete.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		force, err := boolParam(r, "force")
		if err != nil {
			return err
		}
		if err := svc.Delete(r.Context(), r.PathValue("name"), force); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	mux.Handle(vdiskapi.Resize.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		var req resizeRequest
		if err := httpx.DecodeJSON(r, &req); err != nil {
			return err
		}
		info, err := svc.Resize(r.Context(), r.PathValue("name"), int64(req.Size), req.Force)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, info)
		return nil
	}))
	mux.Handle(vdiskapi.ListSnapshots.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		list, err := svc.Snapshots(r.Context(), r.PathValue("name"))
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, list)
		return nil
	}))
	mux.Handle(vdiskapi.Snapshot.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		var req snapshotRequest
		if err := httpx.DecodeJSON(r, &req); err != nil {
			return err
		}
		sn, err := svc.Snapshot(r.Context(), r.PathValue("name"), req.Name)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusCreated, sn)
		return nil
	}))
	mux.Handle(vdiskapi.DeleteSnapshot.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		if err := svc.DeleteSnapshot(r.Context(), r.PathValue("name"), r.PathValue("snap")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	mux.Handle(vdiskapi.Rollback.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		var req rollbackRequest
		if err := httpx.DecodeJSON(r, &req); err != nil {
			return err
		}
		if req.Snapshot == "" {
			return httpx.BadRequest("rollback needs a snapshot")
		}
		info, err := svc.Rollback(r.Context(), r.PathValue("name"), req.Snapshot)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, info)
		return nil
	}))
	mux.Handle(vdiskapi.Clone.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		var req cloneRequest
		if err := httpx.DecodeJSON(r, &req); err != nil {
			return err
		}
		// Both the source and the new vdisk must be the token's.
		if err := authz.Require(r, authz.Data, r.PathValue("name"), req.Name); err != nil {
			return err
		}
		info, err := svc.Clone(r.Context(), r.PathValue("name"), req.Snapshot, req.Name, req.Type)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusCreated, info)
		return nil
	}))
	mux.Handle(vdiskapi.Export.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		name, snap := r.PathValue("name"), r.URL.Query().Get("snap")
		im, err := svc.Image(r.Context(), name, snap)
		if err != nil {
			return err
		}
		file := name
		if snap != "" {
			file += "@" + snap
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(im.Size, 10))
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": file + ".raw"}))
		h.Set("X-Zos-Block-Size", strconv.FormatInt(im.BlockSize, 10))
		w.WriteHeader(http.StatusOK)
		if _, err := im.WriteTo(r.Context(), w, nil); err != nil {
			svc.log.Warn("export aborted", "vdisk", name, "snapshot", snap, "err", err)
			panic(http.ErrAbortHandler) // the client sees a short body
		}
		return nil
	}))
	mux.Handle(vdiskapi.Import.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		name := r.PathValue("name")
		if err := svc.Import(r.Context(), name, r.Body, nil); err != nil {
			return err
		}
		info, err := svc.Get(r.Context(), name, true)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, info)
		return nil
	}))
	mux.Handle(vdiskapi.Diff.Pattern(), handler(func(w http.ResponseWriter, r *http.Request) error {
		if err := authz.Require(r, authz.Data, r.PathValue("name")); err != nil {
			return err
		}
		return diffHandler(svc, w, r)
	}))
}

func boolParam(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, httpx.BadRequest("%s=%q: want true or false", key, v)
	}
	return b, nil
}

func createHandler(svc *Service, w http.ResponseWriter, r *http.Request) error {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		opts  CreateOptions
		image io.Reader
	)
	if ct == "application/octet-stream" {
		q := r.URL.Query()
		opts = CreateOptions{Name: q.Get("name"), Type: q.Get("type"), Pool: q.Get("pool")}
		for key, dst := range map[string]*int64{"size": &opts.Size, "block_size": &opts.BlockSize} {
			if v := q.Get(key); v != "" {
				n, err := size.Parse(v)
				if err != nil {
					return invalidf("%s: %v", key, err)
				}
				*dst = n
			}
		}
		if q.Get("from") != "" {
			return httpx.BadRequest("an image upload cannot also clone (from=%s)", q.Get("from"))
		}
		if opts.Size == 0 {
			if r.ContentLength < 0 {
				return httpx.BadRequest("give size= or a Content-Length for the image")
			}
			opts.Size = (r.ContentLength + 511) &^ 511
		}
		image = r.Body
	} else {
		var req createRequest
		if err := httpx.DecodeJSON(r, &req); err != nil {
			return err
		}
		opts = CreateOptions{Name: req.Name, Size: int64(req.Size), BlockSize: int64(req.BlockSize), Type: req.Type, Pool: req.Pool, From: req.From}
	}
	names := []string{opts.Name}
	if opts.From != "" {
		names = append(names, opts.From) // a clone's source too
	}
	if err := authz.Require(r, authz.Data, names...); err != nil {
		return err
	}
	if opts.Name == "" {
		return httpx.BadRequest("a vdisk needs a name")
	}
	info, err := svc.Create(r.Context(), opts, image, nil)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, info)
	return nil
}

func diffHandler(svc *Service, w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	q := r.URL.Query()
	from, to := q.Get("from"), q.Get("to")
	info, err := svc.Get(r.Context(), name, false)
	if err != nil {
		return err
	}
	// Stream the ranges: the answer can be large.
	started := false
	enc := json.NewEncoder(w)
	start := func() {
		if started {
			return
		}
		started = true
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		head, _ := json.Marshal(DiffAnswer{VDisk: name, From: from, To: to, BlockSize: info.BlockSize, Ranges: []Range{}})
		// Open the ranges array: replace the closing `[]}` of the header.
		io.WriteString(w, strings.TrimSuffix(string(head), "[]}")+"[")
	}
	n := 0
	err = svc.Diff(r.Context(), name, from, to, func(rg Range) error {
		start()
		if n > 0 {
			io.WriteString(w, ",")
		}
		n++
		return enc.Encode(rg)
	})
	if err != nil {
		if !started {
			return err
		}
		svc.log.Warn("diff aborted", "vdisk", name, "err", err)
		panic(http.ErrAbortHandler)
	}
	start()
	io.WriteString(w, "]}\n")
	return nil
}
