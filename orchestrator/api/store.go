package api

import (
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/heal"
	"github.com/zosproject/zos/chunkstore/scrub"
)

// PutBlobResponse answers POST /api/v1/store/blobs.
type PutBlobResponse struct {
	Ref    chunkstore.Ref `json:"ref"`
	Size   int64          `json:"size"`
	Pinned bool           `json:"pinned"`
}

// BlobStatus answers GET /api/v1/store/blobs/{ref}/stat: the state of
// every chunk of a blob (its manifests and data chunks; a plain chunk is a
// blob of one chunk).
type BlobStatus struct {
	Ref        chunkstore.Ref        `json:"ref"`
	Chunks     []erasure.ChunkStatus `json:"chunks"`
	Healthy    int                   `json:"healthy"`
	Degraded   int                   `json:"degraded"`
	Unreadable int                   `json:"unreadable"`
}

// LocalStatus is one node's own view: its heal and scrub progress, and the
// pending repairs of the chunks it wrote degraded (missing shards and the
// nodes they wait for).
type LocalStatus struct {
	Node    string                `json:"node"`
	Heal    heal.Progress         `json:"heal"`
	Scrub   scrub.Result          `json:"scrub"`
	Pending erasure.PendingStatus `json:"pending"`
	Error   string                `json:"error,omitempty"`
}

// StoreStatus answers GET /api/v1/store/status.
type StoreStatus struct {
	erasure.Status
	Local []LocalStatus `json:"local"`
	// Pending sums the pending repairs of every node.
	Pending PendingSummary `json:"pending"`
}

// PendingSummary sums the nodes' pending repairs: chunks written degraded
// whose missing shards are not rebuilt yet.
type PendingSummary struct {
	// Chunks, summed over the nodes that wrote them.
	Chunks int `json:"chunks"`
	// Dropped: degraded chunks not remembered (a node's list was full);
	// heal passes are asked for once their nodes answer.
	Dropped int64 `json:"dropped"`
	// Repaired: chunks whose missing shards the pending repairs rebuilt
	// since each node started.
	Repaired int64 `json:"repaired"`
	// Nodes is the backlog per node lacking shards, summed over writers
	// (Since is the oldest).
	Nodes []erasure.PendingNode `json:"nodes,omitempty"`
}

// ScrubResult is one node's scrub.
type ScrubResult struct {
	Node string `json:"node"`
	scrub.Result
	Error string `json:"error,omitempty"`
}

// PinInfo is one pinned blob.
type PinInfo struct {
	Ref     chunkstore.Ref `json:"ref"`
	Note    string         `json:"note,omitempty"`
	Created int64          `json:"created"`
}
