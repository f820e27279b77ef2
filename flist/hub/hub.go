package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/internal/httpx"
	"github.com/zosproject/zos/internal/route"
)

// Identity is who a request comes from. User names the "me" repository.
type Identity struct {
	User  string
	Admin bool
}

// Authenticator identifies a request (typically from its bearer token).
// An error means the request is not authenticated.
type Authenticator func(*http.Request) (Identity, error)

// Config configures a Hub.
type Config struct {
	// Store holds chunks and flist files. Required.
	Store chunkstore.Store
	// Registry maps repo/name to flists. Required.
	Registry Registry
	// Authenticate identifies writers. Nil refuses every write.
	Authenticate Authenticator
	// MaxUploadBytes bounds an upload (default 32 GiB).
	MaxUploadBytes int64
	// MaxBuilds bounds concurrent archive conversions (default 2).
	MaxBuilds int
	// Chunking for uploaded archives (default flist.DefaultChunking).
	Chunking flist.Chunking
	// TempDir spools uploads (default os.TempDir()).
	TempDir string
	// Fallback serves GET requests of two or more path segments that are
	// not "/REPO/NAME.flist" (the download route catches them because Go's
	// ServeMux has no suffix patterns); default 404. Pass the handler of a
	// "GET /" catch-all here if the mux has one.
	Fallback http.Handler
	// Metrics, if set, receives the hub's metrics.
	Metrics prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("hub: Store is required")
	case c.Registry == nil:
		return errors.New("hub: Registry is required")
	}
	if c.Chunking.Kind != "" {
		return c.Chunking.Validate()
	}
	return nil
}

// Hub serves the flist HTTP API.
type Hub struct {
	cfg    Config
	err    error
	builds chan struct{}
	log    *slog.Logger
	reqs   *prometheus.CounterVec
}

// New returns a hub. An invalid Config makes every handler answer 503 with
// the reason (check Config.Validate first to fail early).
func New(cfg Config) *Hub {
	h := &Hub{cfg: cfg, err: cfg.Validate()}
	if h.cfg.MaxUploadBytes == 0 {
		h.cfg.MaxUploadBytes = 32 << 30
	}
	if h.cfg.MaxBuilds <= 0 {
		h.cfg.MaxBuilds = 2
	}
	if h.cfg.TempDir == "" {
		h.cfg.TempDir = os.TempDir()
	}
	if h.cfg.Logger == nil {
		h.cfg.Logger = slog.Default()
	}
	h.log = h.cfg.Logger.With("component", "flist-hub")
	h.builds = make(chan struct{}, h.cfg.MaxBuilds)
	h.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "zos", Subsystem: "hub", Name: "requests_total",
		Help: "Hub HTTP requests by route and status code."}, []string{"route", "code"})
	if cfg.Metrics != nil {
		_ = cfg.Metrics.Register(h.reqs)
	}
	return h
}

// Register adds the hub's routes to mux:
//
//	GET    /api/flist                       repositories
//	GET    /api/flist/{repo}                a repository's flists
//	GET    /api/flist/{repo}/{name}         inspect (JSON)
//	DELETE /api/flist/{repo}/{name}         delete (owner or admin)
//	POST   /api/flist/me/upload             archive -> flist (multipart "file" or raw body; ?name=)
//	POST   /api/flist/me/upload-flist       register a built .flist file (?name=)
//	POST   /api/flist/me/merge/{name}       merge JSON ["repo/a.flist", ...] -> me/name
//	DELETE /api/flist/me/{name}             delete one of mine
//	GET    /{repo}/{name}.flist             download the flist file (Range supported)
//	GET    /api/v1/chunks/{ref}             a chunk (HEAD: exists?)
//	POST   /api/v1/chunks                   store a chunk (body), returns its ref
//	POST   /api/v1/chunks/missing           JSON {"refs": [...]} -> {"missing": [...]}
//
// Reads are public; writes need Authenticate to accept the request. Upload
// endpoints take ?repo= for admins (and users naming their own repo).
func (h *Hub) Register(mux *http.ServeMux) {
	handle := func(rt route.Route, name string, fn func(http.ResponseWriter, *http.Request)) {
		mux.Handle(rt.Pattern(), h.wrap(name, fn))
	}
	handle(ListReposRoute, "repos", h.listRepos)
	handle(ListRoute, "list", h.list)
	handle(InspectRoute, "inspect", h.inspect)
	handle(DeleteRoute, "delete", h.delete)
	handle(UploadRoute, "upload", h.upload)
	handle(UploadFlistRoute, "upload-flist", h.uploadFlist)
	handle(MergeRoute, "merge", h.merge)
	handle(DeleteMineRoute, "delete", h.delete)
	handle(DownloadRoute, "download", h.download)
	handle(GetChunkRoute, "chunk-get", h.getChunk)
	handle(PutChunkRoute, "chunk-put", h.putChunk)
	handle(MissingChunkRoute, "chunk-missing", h.missing)
}

// Handler returns a mux with only the hub's routes.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	h.Register(mux)
	return mux
}

func (h *Hub) wrap(name string, fn func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := httpx.NewStatusWriter(w)
		defer func() { h.reqs.WithLabelValues(name, strconv.Itoa(sw.Status())).Inc() }()
		if h.err != nil {
			h.fail(sw, fmt.Errorf("hub misconfigured: %w", h.err), http.StatusServiceUnavailable)
			return
		}
		fn(sw, r)
	})
}

// Response envelope, as 0-hub: {"status": "success"|"error", "payload"|"message"}.
type envelope struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	Payload any    `json:"payload,omitempty"`
}

func (h *Hub) ok(w http.ResponseWriter, payload any) {
	httpx.WriteJSON(w, http.StatusOK, envelope{Status: "success", Payload: payload})
}

// fail answers with the status an error maps to (or code if non-zero).
func (h *Hub) fail(w http.ResponseWriter, err error, code int) {
	if code == 0 {
		code = statusOf(err)
	}
	if code >= 500 {
		h.log.Error("request failed", "err", err)
	}
	httpx.WriteJSON(w, code, envelope{Status: "error", Message: err.Error()})
}

// WriteError answers err in the hub's envelope with the status the hub
// maps it to: for what wraps the hub's routes (the node's Idempotency-Key
// check) and refuses a request before it reaches them.
func WriteError(w http.ResponseWriter, err error) {
	httpx.WriteJSON(w, statusOf(err), envelope{Status: "error", Message: err.Error()})
}

// statusOf is the HTTP status of an error: the hub's and flist's error
// kinds here, the chunk store's and the rest by httpx.Classify.
func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, flist.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden), errors.Is(err, flist.ErrDeviceRefused):
		return http.StatusForbidden
	case errors.Is(err, ErrBadName), errors.Is(err, flist.ErrBadArchive), errors.Is(err, flist.ErrUnsafePath),
		errors.Is(err, flist.ErrNotDir), errors.Is(err, flist.ErrCorrupt), errors.Is(err, flist.ErrVersion):
		return http.StatusBadRequest
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	}
	status, _ := httpx.Classify(err)
	return status
}

func (h *Hub) identify(r *http.Request) (Identity, error) {
	if h.cfg.Authenticate == nil {
		return Identity{}, fmt.Errorf("%w: this hub accepts no writes", ErrUnauthorized)
	}
	id, err := h.cfg.Authenticate(r)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	if id.User == "" {
		return Identity{}, fmt.Errorf("%w: token has no user", ErrUnauthorized)
	}
	return id, nil
}

// targetRepo is the repository a write goes to: the caller's own, or
// ?repo= for admins.
func targetRepo(r *http.Request, id Identity) (string, error) {
	repo := r.URL.Query().Get("repo")
	if repo == "" || repo == "me" {
		repo = id.User
	}
	if err := CheckName(repo); err != nil {
		return "", err
	}
	if repo != id.User && !id.Admin {
		return "", fmt.Errorf("%w: %s may not write to repository %s", ErrForbidden, id.User, repo)
	}
	return repo, nil
}

func (h *Hub) listRepos(w http.ResponseWriter, r *http.Request) {
	repos, err := h.cfg.Registry.ListRepos(r.Context())
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	if repos == nil {
		repos = []string{}
	}
	h.ok(w, repos)
}

func (h *Hub) list(w http.ResponseWriter, r *http.Request) {
	repo := r.PathValue("repo")
	if err := CheckName(repo); err != nil {
		h.fail(w, err, 0)
		return
	}
	es, err := h.cfg.Registry.List(r.Context(), repo)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	h.ok(w, es)
}

// Inspection is what inspect returns.
type Inspection struct {
	Entry
	Meta flist.Meta `json:"meta"`
}

func (h *Hub) entry(ctx context.Context, repo, name string) (Entry, error) {
	name = TrimFlistName(name)
	if err := CheckName(repo); err != nil {
		return Entry{}, err
	}
	if err := CheckName(name); err != nil {
		return Entry{}, err
	}
	return h.cfg.Registry.Get(ctx, repo, name)
}

func (h *Hub) inspect(w http.ResponseWriter, r *http.Request) {
	e, err := h.entry(r.Context(), r.PathValue("repo"), r.PathValue("name"))
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	fr, err := flist.OpenStored(r.Context(), h.cfg.Store, e.Ref)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	defer fr.Close()
	h.ok(w, Inspection{Entry: e, Meta: fr.Meta()})
}

func (h *Hub) delete(w http.ResponseWriter, r *http.Request) {
	id, err := h.identify(r)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	repo := r.PathValue("repo")
	if repo == "" || repo == "me" {
		repo = id.User
	}
	e, err := h.entry(r.Context(), repo, r.PathValue("name"))
	if errors.Is(err, ErrNotFound) && r.Header.Get(httpx.IdempotencyHeader) != "" && (id.Admin || repo == id.User) {
		// Perhaps a delete retried after its answer was lost: the
		// Registry answers it (with the first answer if it remembers
		// the key, as the node's does; else not found). The caller
		// may delete anything in this repo, so no owner is checked.
		e, err = Entry{Repo: repo, Name: TrimFlistName(r.PathValue("name"))}, nil
	}
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	if !id.Admin && e.Repo != id.User && e.Owner != id.User {
		h.fail(w, fmt.Errorf("%w: %s/%s belongs to %s", ErrForbidden, e.Repo, e.Name, e.Owner), 0)
		return
	}
	// The flist's chunks stay until the chunk store's garbage collector
	// finds them unreferenced by any registered flist.
	if err := h.cfg.Registry.Delete(r.Context(), e.Repo, e.Name); err != nil {
		h.fail(w, err, 0)
		return
	}
	h.log.Info("flist deleted", "repo", e.Repo, "name", e.Name, "by", id.User)
	h.ok(w, map[string]string{"deleted": e.Repo + "/" + e.Name + ".flist"})
}

// UploadResult is the payload of a successful upload or merge.
type UploadResult struct {
	Flist string      `json:"flist"` // "repo/name.flist"
	Entry Entry       `json:"entry"`
	Kind  flist.Kind  `json:"kind,omitempty"`
	Stats flist.Stats `json:"stats"`
}

// NameFromFile derives an flist name from an uploaded file name, as 0-hub:
// "ubuntu.tar.gz" -> "ubuntu".
func NameFromFile(fn string) string {
	base := path.Base(strings.ReplaceAll(fn, "\\", "/"))
	for _, ext := range []string{".tar.gz", ".tar.zst", ".tar.zstd", ".tgz", ".tar", ".flist", ".gz", ".zst"} {
		if strings.HasSuffix(base, ext) && len(base) > len(ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

// uploadBody returns the uploaded stream and its file name: the multipart
// field "file" (as 0-hub) or the raw body.
// namedUpload reads at most limit bytes of an upload and names the flist
// from ?name= or else from the uploaded file's name.
// It returns the body, the file's name as uploaded, and the flist's name.
func namedUpload(w http.ResponseWriter, r *http.Request, limit int64) (_ io.Reader, fname, name string, _ func(), _ error) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	body, fname, closeBody, err := uploadBody(r)
	if err != nil {
		return nil, "", "", nil, err
	}
	name = TrimFlistName(r.URL.Query().Get("name"))
	if name == "" {
		name = NameFromFile(fname)
	}
	if err := CheckName(name); err != nil {
		closeBody()
		return nil, "", "", nil, fmt.Errorf("%w (give ?name=)", err)
	}
	return body, fname, name, closeBody, nil
}

func uploadBody(r *http.Request) (io.Reader, string, func(), error) {
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return nil, "", nil, fmt.Errorf("%w: multipart upload without a \"file\" field", flist.ErrBadArchive)
			}
			if err != nil {
				return nil, "", nil, fmt.Errorf("%w: %v", flist.ErrBadArchive, err)
			}
			if p.FormName() == "file" {
				return p, p.FileName(), func() { p.Close() }, nil
			}
			p.Close()
		}
	}
	return r.Body, r.URL.Query().Get("filename"), func() {}, nil
}

func (h *Hub) upload(w http.ResponseWriter, r *http.Request) {
	id, err := h.identify(r)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	repo, err := targetRepo(r, id)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	body, fname, name, closeBody, err := namedUpload(w, r, h.cfg.MaxUploadBytes)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	defer closeBody()
	select {
	case h.builds <- struct{}{}:
		defer func() { <-h.builds }()
	case <-r.Context().Done():
		return
	}
	start := time.Now()
	tr, kind, err := flist.BuildStream(r.Context(), body, fname, &flist.Options{
		Store:        h.cfg.Store,
		Chunking:     h.cfg.Chunking,
		AllowDevices: id.Admin,
		TempDir:      h.cfg.TempDir,
		Source:       fname,
		Logger:       h.log,
	})
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	res, err := h.register(r.Context(), tr, repo, name, id)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	res.Kind = kind
	h.log.Info("flist uploaded", "flist", res.Flist, "kind", kind, "by", id.User, "files", res.Stats.Files,
		"bytes", res.Stats.Bytes, "took", time.Since(start).Round(time.Millisecond))
	h.ok(w, res)
}

func (h *Hub) register(ctx context.Context, tr *flist.Tree, repo, name string, id Identity) (UploadResult, error) {
	ref, size, meta, err := flist.Put(ctx, h.cfg.Store, tr)
	if err != nil {
		return UploadResult{}, err
	}
	e := Entry{Repo: repo, Name: name, Ref: ref, Size: size, Created: meta.Created, Owner: id.User, Source: meta.Source, Stats: meta.Stats}
	if err := h.cfg.Registry.Put(ctx, e); err != nil {
		return UploadResult{}, err
	}
	return UploadResult{Flist: repo + "/" + name + ".flist", Entry: e, Stats: meta.Stats}, nil
}

// maxFlistFile bounds an uploaded flist file.
const maxFlistFile = 1 << 30

func (h *Hub) uploadFlist(w http.ResponseWriter, r *http.Request) {
	id, err := h.identify(r)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	repo, err := targetRepo(r, id)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	body, _, name, closeBody, err := namedUpload(w, r, maxFlistFile)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	defer closeBody()
	data, err := io.ReadAll(body)
	if err != nil {
		h.fail(w, fmt.Errorf("%w: %v", flist.ErrBadArchive, err), 0)
		return
	}
	fr, err := flist.Open(r.Context(), strings.NewReader(string(data)), int64(len(data)), nil)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	defer fr.Close()
	// Devices only from admins; every chunk must already be stored.
	var refs []chunkstore.Ref
	seen := map[chunkstore.Ref]bool{}
	err = fr.Walk(func(e flist.Entry) error {
		if (e.Type() == flist.TypeChar || e.Type() == flist.TypeBlock) && !id.Admin {
			return fmt.Errorf("%w: /%s is a device node; only admins may upload devices", flist.ErrDeviceRefused, e.Path)
		}
		if e.IsRegular() {
			cs, err := fr.Chunks(e.Ino)
			if err != nil {
				return err
			}
			for _, c := range cs {
				if !seen[c.Ref] {
					seen[c.Ref] = true
					refs = append(refs, c.Ref)
				}
			}
		}
		return nil
	})
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	missing, err := h.missingRefs(r.Context(), refs)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	if len(missing) > 0 {
		h.fail(w, fmt.Errorf("%w: %d of the flist's %d chunks are not in the store (push them first, e.g. %s)",
			flist.ErrBadArchive, len(missing), len(refs), missing[0]), http.StatusConflict)
		return
	}
	ref, size, err := flist.PutFile(r.Context(), h.cfg.Store, strings.NewReader(string(data)))
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	meta := fr.Meta()
	e := Entry{Repo: repo, Name: name, Ref: ref, Size: size, Created: meta.Created, Owner: id.User, Source: meta.Source, Stats: meta.Stats}
	if err := h.cfg.Registry.Put(r.Context(), e); err != nil {
		h.fail(w, err, 0)
		return
	}
	h.log.Info("flist registered", "flist", repo+"/"+name, "by", id.User)
	h.ok(w, UploadResult{Flist: repo + "/" + name + ".flist", Entry: e, Stats: meta.Stats})
}

func (h *Hub) missingRefs(ctx context.Context, refs []chunkstore.Ref) ([]chunkstore.Ref, error) {
	var missing []chunkstore.Ref
	for _, ref := range refs {
		if _, err := h.cfg.Store.Stat(ctx, ref); err != nil {
			if errors.Is(err, chunkstore.ErrNotFound) {
				missing = append(missing, ref)
				continue
			}
			return nil, err
		}
	}
	return missing, nil
}

func (h *Hub) merge(w http.ResponseWriter, r *http.Request) {
	id, err := h.identify(r)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	repo, err := targetRepo(r, id)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	name := TrimFlistName(r.PathValue("name"))
	if err := CheckName(name); err != nil {
		h.fail(w, err, 0)
		return
	}
	var sources []string
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&sources); err != nil || len(sources) == 0 {
		h.fail(w, fmt.Errorf("%w: body must be a JSON list of \"repo/name.flist\"", ErrBadName), http.StatusBadRequest)
		return
	}
	var trees []*flist.Tree
	for _, s := range sources {
		srepo, sname, ok := strings.Cut(strings.TrimPrefix(s, "/"), "/")
		if !ok {
			h.fail(w, fmt.Errorf("%w: %q is not repo/name.flist", ErrBadName, s), 0)
			return
		}
		e, err := h.entry(r.Context(), srepo, sname)
		if err != nil {
			h.fail(w, err, 0)
			return
		}
		fr, err := flist.OpenStored(r.Context(), h.cfg.Store, e.Ref)
		if err != nil {
			h.fail(w, err, 0)
			return
		}
		t, err := fr.Tree()
		fr.Close()
		if err != nil {
			h.fail(w, err, 0)
			return
		}
		if t.Meta.Source == "" {
			t.Meta.Source = e.Repo + "/" + e.Name
		}
		trees = append(trees, t)
	}
	merged, err := flist.Merge(trees...)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	res, err := h.register(r.Context(), merged, repo, name, id)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	h.ok(w, res)
}

func (h *Hub) download(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if !strings.HasSuffix(file, ".flist") || strings.Contains(file, "/") {
		if h.cfg.Fallback != nil {
			h.cfg.Fallback.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
		return
	}
	e, err := h.entry(r.Context(), r.PathValue("repo"), file)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	ra, size, err := flist.StoredReaderAt(r.Context(), h.cfg.Store, e.Ref)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+e.Ref.String()+`"`)
	w.Header().Set("X-Zos-Ref", e.Ref.String())
	http.ServeContent(w, r, file, e.Created, io.NewSectionReader(ra, 0, size))
}

func (h *Hub) getChunk(w http.ResponseWriter, r *http.Request) {
	ref, err := chunkstore.ParseRef(r.PathValue("ref"))
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("ETag", `"`+ref.String()+`"`)
	if r.Method == http.MethodHead {
		info, err := h.cfg.Store.Stat(r.Context(), ref)
		if err != nil {
			w.WriteHeader(statusOf(err))
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	data, err := h.cfg.Store.Fetch(r.Context(), ref)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

func (h *Hub) putChunk(w http.ResponseWriter, r *http.Request) {
	if _, err := h.identify(r); err != nil {
		h.fail(w, err, 0)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, chunkstore.MaxChunkSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(w, chunkstore.ErrTooLarge, http.StatusRequestEntityTooLarge)
			return
		}
		h.fail(w, err, http.StatusBadRequest)
		return
	}
	if want := r.Header.Get("X-Zos-Ref"); want != "" && want != chunkstore.Sum(data).String() {
		h.fail(w, fmt.Errorf("%w: body does not match X-Zos-Ref (damaged in transit?)", chunkstore.ErrCorrupt), http.StatusBadRequest)
		return
	}
	ref, err := h.cfg.Store.Put(r.Context(), data)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{"ref": ref.String()})
}

type missingRequest struct {
	Refs []chunkstore.Ref `json:"refs"`
}

type missingResponse struct {
	Missing []chunkstore.Ref `json:"missing"`
}

func (h *Hub) missing(w http.ResponseWriter, r *http.Request) {
	var req missingRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
		h.fail(w, fmt.Errorf("%w: %v", chunkstore.ErrBadRef, err), http.StatusBadRequest)
		return
	}
	if len(req.Refs) > 100000 {
		h.fail(w, fmt.Errorf("%w: at most 100000 refs per request", chunkstore.ErrBadRef), http.StatusBadRequest)
		return
	}
	missing, err := h.missingRefs(r.Context(), req.Refs)
	if err != nil {
		h.fail(w, err, 0)
		return
	}
	if missing == nil {
		missing = []chunkstore.Ref{}
	}
	httpx.WriteJSON(w, http.StatusOK, missingResponse{Missing: missing})
}
