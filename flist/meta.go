package flist

import "time"

// FormatVersion is the flist file format this package writes. Readers accept
// files with Format <= FormatVersion.
const FormatVersion = 1

// BuilderVersion identifies this builder in Meta.Builder.
const BuilderVersion = "zos-flist/1"

// Meta is the flist-level metadata, stored as JSON in the file.
type Meta struct {
	Format   int               `json:"format"`
	Builder  string            `json:"builder"`
	Created  time.Time         `json:"created"`
	Source   string            `json:"source,omitempty"`   // what it was built from (file name, image ref)
	Chunking string            `json:"chunking,omitempty"` // chunker that cut the files, e.g. "fastcdc-256k-1m-4m"
	Image    *ImageConfig      `json:"image,omitempty"`    // OCI/docker config, when built from an image
	Labels   map[string]string `json:"labels,omitempty"`
	Stats    Stats             `json:"stats"`
}

// ImageConfig is what a container runtime needs from an OCI image config.
type ImageConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
	Volumes      []string          `json:"volumes,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
	OS           string            `json:"os,omitempty"`
}

// Stats summarises an flist. Bytes counts every regular file once (hard
// links are not double counted); Chunks counts chunk references, UniqueChunks
// and UniqueBytes the distinct chunks (what the store holds for this flist).
type Stats struct {
	Inodes       uint64 `json:"inodes"`
	Dirs         uint64 `json:"dirs"`
	Files        uint64 `json:"files"`
	Symlinks     uint64 `json:"symlinks"`
	Devices      uint64 `json:"devices"`
	Others       uint64 `json:"others"`     // fifos and sockets
	HardLinks    uint64 `json:"hard_links"` // extra names of multiply linked files
	Bytes        int64  `json:"bytes"`
	Chunks       uint64 `json:"chunks"`
	UniqueChunks uint64 `json:"unique_chunks"`
	UniqueBytes  int64  `json:"unique_bytes"`
}
