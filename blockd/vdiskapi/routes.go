package vdiskapi

import (
	"net/http"

	"github.com/zosproject/zos/internal/route"
)

// The vdisk routes.
var (
	List           = route.New(http.MethodGet, "/api/v1/vdisks")
	Create         = route.New(http.MethodPost, "/api/v1/vdisks")
	Get            = route.New(http.MethodGet, "/api/v1/vdisks/{name}")
	Delete         = route.New(http.MethodDelete, "/api/v1/vdisks/{name}")
	Resize         = route.New(http.MethodPost, "/api/v1/vdisks/{name}/resize")
	ListSnapshots  = route.New(http.MethodGet, "/api/v1/vdisks/{name}/snapshots")
	Snapshot       = route.New(http.MethodPost, "/api/v1/vdisks/{name}/snapshots")
	DeleteSnapshot = route.New(http.MethodDelete, "/api/v1/vdisks/{name}/snapshots/{snap}")
	Rollback       = route.New(http.MethodPost, "/api/v1/vdisks/{name}/rollback")
	Clone          = route.New(http.MethodPost, "/api/v1/vdisks/{name}/clone")
	Export         = route.New(http.MethodGet, "/api/v1/vdisks/{name}/export")
	Import         = route.New(http.MethodPut, "/api/v1/vdisks/{name}/import")
	Diff           = route.New(http.MethodGet, "/api/v1/vdisks/{name}/diff")
)

// Routes is every route above.
var Routes = []route.Route{List, Create, Get, Delete, Resize, ListSnapshots, Snapshot, DeleteSnapshot,
	Rollback, Clone, Export, Import, Diff}
