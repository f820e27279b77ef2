package hub

import (
	"net/http"

	"github.com/zosproject/zos/internal/route"
)

// The hub's routes, registered by Hub.Register and called by Client.
var (
	ListReposRoute   = route.New(http.MethodGet, "/api/flist")
	ListRoute        = route.New(http.MethodGet, "/api/flist/{repo}")
	InspectRoute     = route.New(http.MethodGet, "/api/flist/{repo}/{name}")
	DeleteRoute      = route.New(http.MethodDelete, "/api/flist/{repo}/{name}")
	UploadRoute      = route.New(http.MethodPost, "/api/flist/me/upload")
	UploadFlistRoute = route.New(http.MethodPost, "/api/flist/me/upload-flist")
	MergeRoute       = route.New(http.MethodPost, "/api/flist/me/merge/{name}")
	DeleteMineRoute  = route.New(http.MethodDelete, "/api/flist/me/{name}")
	// DownloadRoute serves "/REPO/NAME.flist"; "{file...}" rather than
	// "{file}" so that any prefix pattern of the caller ("/ui/",
	// "/static/") is more specific and wins instead of conflicting.
	DownloadRoute     = route.New(http.MethodGet, "/{repo}/{file...}")
	GetChunkRoute     = route.New(http.MethodGet, "/api/v1/chunks/{ref}")
	PutChunkRoute     = route.New(http.MethodPost, "/api/v1/chunks")
	MissingChunkRoute = route.New(http.MethodPost, "/api/v1/chunks/missing")
)

// Routes is every route above. Reads are public; the writes (Delete,
// DeleteMine, Upload, UploadFlist, Merge, PutChunk) need a token.
var Routes = []route.Route{ListReposRoute, ListRoute, InspectRoute, DeleteRoute, UploadRoute, UploadFlistRoute,
	MergeRoute, DeleteMineRoute, DownloadRoute, GetChunkRoute, PutChunkRoute, MissingChunkRoute}
