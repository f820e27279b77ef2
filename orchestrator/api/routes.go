package api

import (
	"net/http"

	"github.com/zosproject/zos/internal/route"
)

// Open routes (no token).
var (
	Healthz = route.New(http.MethodGet, "/healthz")
	Readyz  = route.New(http.MethodGet, "/readyz")
	// Metrics needs a token of any role.
	Metrics = route.New(http.MethodGet, "/metrics")
)

// Cluster and membership.
var (
	GetCluster  = route.New(http.MethodGet, "/api/v1/cluster")
	ListNodes   = route.New(http.MethodGet, "/api/v1/nodes")
	GetNode     = route.New(http.MethodGet, "/api/v1/nodes/{id}")
	JoinNode    = route.New(http.MethodPost, "/api/v1/nodes/join")
	RemoveNode  = route.New(http.MethodDelete, "/api/v1/nodes/{id}")
	PromoteNode = route.New(http.MethodPost, "/api/v1/nodes/{id}/promote")
	DemoteNode  = route.New(http.MethodPost, "/api/v1/nodes/{id}/demote")
)

// Tokens and pools.
var (
	ListTokens  = route.New(http.MethodGet, "/api/v1/tokens")
	CreateToken = route.New(http.MethodPost, "/api/v1/tokens")
	DeleteToken = route.New(http.MethodDelete, "/api/v1/tokens/{id}")
	ListPools   = route.New(http.MethodGet, "/api/v1/pools")
	CreatePool  = route.New(http.MethodPost, "/api/v1/pools")
	DeletePool  = route.New(http.MethodDelete, "/api/v1/pools/{name}")
)

// The generic key-value namespace (admin).
var (
	ListKV   = route.New(http.MethodGet, "/api/v1/kv/{ns}")
	GetKV    = route.New(http.MethodGet, "/api/v1/kv/{ns}/{key...}")
	PutKV    = route.New(http.MethodPut, "/api/v1/kv/{ns}/{key...}")
	DeleteKV = route.New(http.MethodDelete, "/api/v1/kv/{ns}/{key...}")
)

// The chunk store.
var (
	PutBlob        = route.New(http.MethodPost, "/api/v1/store/blobs")
	GetBlob        = route.New(http.MethodGet, "/api/v1/store/blobs/{ref}")
	StatBlob       = route.New(http.MethodGet, "/api/v1/store/blobs/{ref}/stat")
	StatChunk      = route.New(http.MethodGet, "/api/v1/store/chunks/{ref}")
	GetStoreStatus = route.New(http.MethodGet, "/api/v1/store/status")
	Scrub          = route.New(http.MethodPost, "/api/v1/store/scrub")
	GC             = route.New(http.MethodPost, "/api/v1/store/gc")
	ListPins       = route.New(http.MethodGet, "/api/v1/store/pins")
	Unpin          = route.New(http.MethodDelete, "/api/v1/store/pins/{ref}")
)

// Internal routes: nodes only (the cluster secret).
var (
	Forward    = route.New(http.MethodPost, "/internal/v1/forward")
	LocalStore = route.New(http.MethodGet, "/internal/v1/store/local")
	LocalScrub = route.New(http.MethodPost, "/internal/v1/store/scrub")
	LocalHeal  = route.New(http.MethodPost, "/internal/v1/store/heal")
	SyncVDisk  = route.New(http.MethodPost, "/internal/v1/vdisks/{name}/sync")
)

// Routes is every route above.
var Routes = []route.Route{
	Healthz, Readyz, Metrics,
	GetCluster, ListNodes, GetNode, JoinNode, RemoveNode, PromoteNode, DemoteNode,
	ListTokens, CreateToken, DeleteToken, ListPools, CreatePool, DeletePool,
	ListKV, GetKV, PutKV, DeleteKV,
	PutBlob, GetBlob, StatBlob, StatChunk, GetStoreStatus, Scrub, GC, ListPins, Unpin,
	Forward, LocalStore, LocalScrub, LocalHeal, SyncVDisk,
}
