package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/zosproject/zos/blockd/vdiskapi"
)

// VDisks lists the vdisks.
func (c *Client) VDisks(ctx context.Context) ([]vdiskapi.VDiskInfo, error) {
	var out []vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.List, nil, nil, &out)
}

// VDisk returns one vdisk, with its allocated bytes.
func (c *Client) VDisk(ctx context.Context, name string) (vdiskapi.VDiskInfo, error) {
	var out vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.Get, nil, nil, &out, name)
}

// CreateVDisk creates a vdisk: empty, or a clone of req.From
// ("NAME@SNAP").
func (c *Client) CreateVDisk(ctx context.Context, req vdiskapi.CreateRequest) (vdiskapi.VDiskInfo, error) {
	var out vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.Create, nil, req, &out)
}

// CreateVDiskFromImage creates a vdisk filled from a raw image (req.From
// must be empty; req.Size 0 lets the node use the upload's length).
func (c *Client) CreateVDiskFromImage(ctx context.Context, req vdiskapi.CreateRequest, image io.Reader) (vdiskapi.VDiskInfo, error) {
	q := url.Values{"name": {req.Name}}
	if req.Size != 0 {
		q.Set("size", strconv.FormatInt(int64(req.Size), 10))
	}
	if req.BlockSize != 0 {
		q.Set("block_size", strconv.FormatInt(int64(req.BlockSize), 10))
	}
	if req.Type != "" {
		q.Set("type", req.Type)
	}
	if req.Pool != "" {
		q.Set("pool", req.Pool)
	}
	if req.From != "" {
		q.Set("from", req.From)
	}
	body, _, err := c.stream(ctx, vdiskapi.Create, q, image)
	if err != nil {
		return vdiskapi.VDiskInfo{}, err
	}
	defer body.Close()
	var out vdiskapi.VDiskInfo
	if err := json.NewDecoder(body).Decode(&out); err != nil {
		return out, fmt.Errorf("client: %s: decode answer: %w", vdiskapi.Create, err)
	}
	return out, nil
}

// DeleteVDisk deletes a vdisk and its snapshots; force deletes it even
// while attached read-write.
func (c *Client) DeleteVDisk(ctx context.Context, name string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.call(ctx, vdiskapi.Delete, q, nil, nil, name)
}

// ResizeVDisk changes a vdisk's size; shrinking needs force.
func (c *Client) ResizeVDisk(ctx context.Context, name string, size vdiskapi.Size, force bool) (vdiskapi.VDiskInfo, error) {
	var out vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.Resize, nil, vdiskapi.ResizeRequest{Size: size, Force: force}, &out, name)
}

// Snapshots lists a vdisk's snapshots.
func (c *Client) Snapshots(ctx context.Context, name string) ([]vdiskapi.SnapshotInfo, error) {
	var out []vdiskapi.SnapshotInfo
	return out, c.call(ctx, vdiskapi.ListSnapshots, nil, nil, &out, name)
}

// Snapshot takes snapshot snap of vdisk name.
func (c *Client) Snapshot(ctx context.Context, name, snap string) (vdiskapi.SnapshotInfo, error) {
	var out vdiskapi.SnapshotInfo
	return out, c.call(ctx, vdiskapi.Snapshot, nil, vdiskapi.SnapshotRequest{Name: snap}, &out, name)
}

// DeleteSnapshot deletes a snapshot.
func (c *Client) DeleteSnapshot(ctx context.Context, name, snap string) error {
	return c.call(ctx, vdiskapi.DeleteSnapshot, nil, nil, nil, name, snap)
}

// Rollback sets vdisk name back to snapshot snap.
func (c *Client) Rollback(ctx context.Context, name, snap string) (vdiskapi.VDiskInfo, error) {
	var out vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.Rollback, nil, vdiskapi.RollbackRequest{Snapshot: snap}, &out, name)
}

// Clone clones snapshot snap of vdisk name ("" = its head) into a new
// vdisk of type typ ("" = the origin's).
func (c *Client) Clone(ctx context.Context, name, snap, newName, typ string) (vdiskapi.VDiskInfo, error) {
	var out vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.Clone, nil, vdiskapi.CloneRequest{Snapshot: snap, Name: newName, Type: typ}, &out, name)
}

// Export streams vdisk name (or its snapshot snap) as a raw image; the
// caller closes the body. size is the image's length.
func (c *Client) Export(ctx context.Context, name, snap string) (body io.ReadCloser, size int64, err error) {
	var q url.Values
	if snap != "" {
		q = url.Values{"snap": {snap}}
	}
	return c.stream(ctx, vdiskapi.Export, q, nil, name)
}

// Import replaces vdisk name's content with the raw image r.
func (c *Client) Import(ctx context.Context, name string, r io.Reader) (vdiskapi.VDiskInfo, error) {
	var out vdiskapi.VDiskInfo
	return out, c.call(ctx, vdiskapi.Import, nil, r, &out, name)
}

// Diff returns the byte ranges that changed in vdisk name from snapshot
// from ("" = the empty disk) to snapshot to ("" = the head).
func (c *Client) Diff(ctx context.Context, name, from, to string) (vdiskapi.DiffAnswer, error) {
	var out vdiskapi.DiffAnswer
	return out, c.call(ctx, vdiskapi.Diff, url.Values{"from": {from}, "to": {to}}, nil, &out, name)
}
