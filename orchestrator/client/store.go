package client

import (
	"context"
	"io"
	"net/url"
	"strconv"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/gc"
	"github.com/zosproject/zos/internal/route"
	"github.com/zosproject/zos/orchestrator/api"
)

// PutBlobOptions are the options of PutBlob.
type PutBlobOptions struct {
	Pool  string // "" = the default pool
	Note  string // kept with the pin
	NoPin bool   // do not pin: the garbage collector may remove the blob
}

// PutBlob stores r as a blob (chunks plus manifests) and pins it unless
// opts.NoPin.
func (c *Client) PutBlob(ctx context.Context, r io.Reader, opts PutBlobOptions) (api.PutBlobResponse, error) {
	q := url.Values{}
	if opts.Note != "" {
		q.Set("note", opts.Note)
	}
	if opts.Pool != "" {
		q.Set("pool", opts.Pool)
	}
	if opts.NoPin {
		q.Set("pin", "false")
	}
	var out api.PutBlobResponse
	return out, c.call(ctx, api.PutBlob, q, r, &out)
}

// GetBlob streams a blob; the caller closes the body. size is its length
// (-1 if the answer does not say).
func (c *Client) GetBlob(ctx context.Context, ref chunkstore.Ref) (body io.ReadCloser, size int64, err error) {
	return c.stream(ctx, api.GetBlob, nil, nil, ref.String())
}

// stream sends a request on rt and returns the answer's body and length.
func (c *Client) stream(ctx context.Context, rt route.Route, q url.Values, body any, args ...string) (io.ReadCloser, int64, error) {
	resp, err := c.Stream(ctx, rt.Method, route.Query(rt.URL(args...), q), body, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// StatBlob returns the state of every chunk of a blob.
func (c *Client) StatBlob(ctx context.Context, ref chunkstore.Ref) (api.BlobStatus, error) {
	var out api.BlobStatus
	return out, c.call(ctx, api.StatBlob, nil, nil, &out, ref.String())
}

// StatChunk returns where one chunk's shards are and whether they are
// healthy.
func (c *Client) StatChunk(ctx context.Context, ref chunkstore.Ref) (erasure.ChunkStatus, error) {
	var out erasure.ChunkStatus
	return out, c.call(ctx, api.StatChunk, nil, nil, &out, ref.String())
}

// StoreStatus returns the store's status with every node's heal and scrub
// progress; census counts every chunk (slower).
func (c *Client) StoreStatus(ctx context.Context, census bool) (api.StoreStatus, error) {
	var q url.Values
	if !census {
		q = url.Values{"census": {"false"}}
	}
	var out api.StoreStatus
	return out, c.call(ctx, api.GetStoreStatus, q, nil, &out)
}

// Scrub verifies every shard on every node now and reports each node.
func (c *Client) Scrub(ctx context.Context) ([]api.ScrubResult, error) {
	var out []api.ScrubResult
	return out, c.call(ctx, api.Scrub, nil, nil, &out)
}

// GC collects the chunks nothing reaches; dryRun only counts them.
func (c *Client) GC(ctx context.Context, dryRun bool) (gc.Result, error) {
	var q url.Values
	if dryRun {
		q = url.Values{"dry_run": {strconv.FormatBool(true)}}
	}
	var out gc.Result
	return out, c.call(ctx, api.GC, q, nil, &out)
}

// Pins lists the pinned blobs.
func (c *Client) Pins(ctx context.Context) ([]api.PinInfo, error) {
	var out []api.PinInfo
	return out, c.call(ctx, api.ListPins, nil, nil, &out)
}

// Unpin unpins a blob.
func (c *Client) Unpin(ctx context.Context, ref chunkstore.Ref) error {
	return c.call(ctx, api.Unpin, nil, nil, nil, ref.String())
}

// Node-to-node routes (the cluster secret).

// LocalStoreStatus returns the answering node's own heal, scrub and
// pending-repair state.
func (c *Client) LocalStoreStatus(ctx context.Context) (api.LocalStatus, error) {
	var out api.LocalStatus
	return out, c.call(ctx, api.LocalStore, nil, nil, &out)
}

// ScrubLocal scrubs the answering node's shards now.
func (c *Client) ScrubLocal(ctx context.Context) (api.ScrubResult, error) {
	var out api.ScrubResult
	return out, c.call(ctx, api.LocalScrub, nil, nil, &out)
}

// HealLocal asks the answering node for a heal pass.
func (c *Client) HealLocal(ctx context.Context) error {
	return c.call(ctx, api.LocalHeal, nil, nil, nil)
}

// SyncVDisk asks the node holding vdisk name's read-write lease to commit
// it.
func (c *Client) SyncVDisk(ctx context.Context, name string) error {
	return c.call(ctx, api.SyncVDisk, nil, nil, nil, name)
}
