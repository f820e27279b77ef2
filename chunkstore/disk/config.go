package disk

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Store. The zero value plus Dir is a production
// configuration.
type Config struct {
	// Dir holds the store: Dir/index (pebble) and Dir/seg (segment files).
	Dir string
	// FS is the file system seam (pebble's vfs.FS, shared by the segment
	// files and the pebble index so that a simulated crash affects both
	// consistently). Default vfs.Default.
	FS vfs.FS
	// SegmentSize is the size at which the active segment file is sealed and
	// a new one started. Default 256 MiB.
	SegmentSize int64
	// NoSync skips fsync of segments and the index. Only for data that may be
	// lost on a crash (tests, throwaway caches): an acknowledged write may
	// vanish after a power failure.
	NoSync bool
	// PageCacheBytes bounds the synced segment data the writer leaves in
	// the kernel's page cache, newest first: as it writes more, it tells
	// the kernel to drop the oldest (doc.go, "Page cache"). Default
	// DefaultPageCacheBytes; negative leaves it all to the kernel.
	PageCacheBytes int64
	// CompactRatio: sealed segments whose dead fraction is at least this are
	// compacted (their live records copied forward, the file deleted).
	// Default 0.5.
	CompactRatio float64
	// CompactInterval is how often the background compactor looks for
	// segments to compact. Default 1 minute; negative disables it (call
	// Store.Compact yourself).
	CompactInterval time.Duration
	// CacheSize is the pebble block cache size for the index. Default 32 MiB.
	CacheSize int64
	// MaxBatchBytes caps the data of one group commit. Default 64 MiB.
	MaxBatchBytes int64
	// Logger receives the store's logs (component "disk"). Default: discard.
	Logger *slog.Logger
	// Registry, if set, receives the store's Prometheus metrics.
	Registry *prometheus.Registry
	// Now is the clock for shard write times. Default time.Now.
	Now func() time.Time
}

// DefaultPageCacheBytes is the default Config.PageCacheBytes.
const DefaultPageCacheBytes = 2 << 30

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("disk: bad config")

func (c *Config) setDefaults() {
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = 256 << 20
	}
	if c.PageCacheBytes == 0 {
		c.PageCacheBytes = DefaultPageCacheBytes
	}
	if c.CompactRatio == 0 {
		c.CompactRatio = 0.5
	}
	if c.CompactInterval == 0 {
		c.CompactInterval = time.Minute
	}
	if c.CacheSize == 0 {
		c.CacheSize = 32 << 20
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports whether c (after defaults) is usable.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is required", ErrConfig)
	case c.SegmentSize < 1<<16:
		return fmt.Errorf("%w: SegmentSize %d is below 64 KiB", ErrConfig, c.SegmentSize)
	case c.CompactRatio <= 0 || c.CompactRatio > 1:
		return fmt.Errorf("%w: CompactRatio %v not in (0, 1]", ErrConfig, c.CompactRatio)
	case c.MaxBatchBytes < 1<<20:
		return fmt.Errorf("%w: MaxBatchBytes %d is below 1 MiB", ErrConfig, c.MaxBatchBytes)
	}
	return nil
}
