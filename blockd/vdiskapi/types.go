package vdiskapi

import (
	"time"

	"github.com/zosproject/zos/internal/size"
)

// Size is a byte count that decodes from a JSON number or a string like
// "10G" (internal/size).
type Size = size.Bytes

// Request bodies.
type (
	// CreateRequest is the JSON body of POST /api/v1/vdisks.
	CreateRequest struct {
		Name      string `json:"name"`
		Size      Size   `json:"size"`
		BlockSize Size   `json:"block_size"`
		Type      string `json:"type"`
		Pool      string `json:"pool"`
		From      string `json:"from"`
	}
	// ResizeRequest is the body of POST /api/v1/vdisks/{name}/resize.
	ResizeRequest struct {
		Size  Size `json:"size"`
		Force bool `json:"force"`
	}
	// SnapshotRequest is the body of POST /api/v1/vdisks/{name}/snapshots.
	SnapshotRequest struct {
		Name string `json:"name"`
	}
	// RollbackRequest is the body of POST /api/v1/vdisks/{name}/rollback.
	RollbackRequest struct {
		Snapshot string `json:"snapshot"`
	}
	// CloneRequest is the body of POST /api/v1/vdisks/{name}/clone.
	CloneRequest struct {
		Snapshot string `json:"snapshot"` // "" clones the current head (not while attached)
		Name     string `json:"name"`     // the new vdisk
		Type     string `json:"type"`
	}
	// DiffAnswer is the JSON of GET /api/v1/vdisks/{name}/diff.
	DiffAnswer struct {
		VDisk     string  `json:"vdisk"`
		From      string  `json:"from,omitempty"`
		To        string  `json:"to,omitempty"`
		BlockSize int64   `json:"block_size"`
		Ranges    []Range `json:"ranges"`
	}
)

// VDiskInfo describes a vdisk (the API's JSON shape).
type VDiskInfo struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Pool       string `json:"pool"`
	Size       int64  `json:"size"`
	BlockSize  int64  `json:"block_size"`
	Head       string `json:"head,omitempty"`
	Generation uint64 `json:"generation"`
	Parent     string `json:"parent,omitempty"`
	AttachedTo string `json:"attached_to,omitempty"` // node holding the read-write lease
	LeaseEpoch uint64 `json:"lease_epoch,omitempty"`
	// Unreplayed: the last read-write writer failed with writes only in
	// the vdisk's journal; the next attach (or snapshot, export…) replays
	// them.
	Unreplayed bool `json:"unreplayed,omitempty"`
	// Takeover: the last time a node took the vdisk over from a writer
	// that failed.
	Takeover  *TakeoverInfo  `json:"takeover,omitempty"`
	Snapshots []SnapshotInfo `json:"snapshots"`
	Created   time.Time      `json:"created"`
	Modified  time.Time      `json:"modified"`
	// Allocated is the bytes of blocks present in the head's tree (Get
	// only; -1 when not computed).
	Allocated int64 `json:"allocated,omitempty"`
}

// TakeoverInfo describes a takeover of a vdisk from a failed writer.
type TakeoverInfo struct {
	From      string    `json:"from"` // the failed writer's node
	FromEpoch uint64    `json:"from_epoch"`
	Node      string    `json:"node"` // the node that took it over
	Epoch     uint64    `json:"epoch"`
	At        time.Time `json:"at"` // the new lease was granted
	// Seconds from the failed writer's last lease renewal (it failed at
	// most a renewal period later) to the first write completed on Node;
	// to the new lease while nothing was written yet (Written false).
	Seconds float64 `json:"seconds"`
	Written bool    `json:"written"`
}

// SnapshotInfo describes one snapshot.
type SnapshotInfo struct {
	Name    string    `json:"name"`
	Head    string    `json:"head,omitempty"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// Range is a changed byte range of a diff.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	// Zero: the range reads as zeroes in the newer version (trimmed or
	// zeroed), so a backup can punch it instead of copying it.
	Zero bool `json:"zero,omitempty"`
}
