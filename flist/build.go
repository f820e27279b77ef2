package flist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// Progress reports how far a build is. TotalBytes is the input size when
// known (compressed archive size for archives), else -1; InputBytes counts
// the same unit, so InputBytes/TotalBytes is a fraction done.
type Progress struct {
	Files      uint64 // regular files ingested
	Entries    uint64 // all entries ingested
	Bytes      int64  // file content bytes chunked
	InputBytes int64  // input bytes consumed
	TotalBytes int64
	Path       string // last entry ingested
	Done       bool
}

// Options configure a build.
type Options struct {
	// Store receives file chunks. Required.
	Store chunkstore.Receiver
	// Chunking defaults to DefaultChunking.
	Chunking Chunking
	// AllowDevices permits character and block device nodes in the input
	// (give it to admins only). Without it they are refused with
	// ErrDeviceRefused.
	AllowDevices bool
	// Concurrency is the number of chunk uploads in flight (default 4).
	Concurrency int
	// Progress, if set, is called at most every ProgressInterval and once
	// with Done at the end.
	Progress         func(Progress)
	ProgressInterval time.Duration // default 500ms
	// Source is recorded in Meta.Source (defaults to the input name).
	Source string
	// Labels are recorded in Meta.Labels (merged over image labels).
	Labels map[string]string
	// Platform picks a manifest from a multi-platform OCI index, as
	// "os/arch" (default "linux/" + GOARCH of the build host, falling back
	// to the only manifest).
	Platform string
	// Image picks a manifest by its ref name / repo tag when an archive
	// holds several images (default: the only one, or the first).
	Image string
	// TempDir for spooling compressed image archives (default os.TempDir).
	TempDir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.Chunking.Kind == "" {
		c.Chunking = DefaultChunking
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	c.Logger = c.Logger.With("component", "flist-build")
	return c
}

// Validate checks the options.
func (o *Options) Validate() error {
	if o.Store == nil {
		return errors.New("flist: build options need a Store for file chunks")
	}
	c := o.withDefaults()
	return c.Chunking.Validate()
}

// builder carries the state of one build.
type builder struct {
	ctx  context.Context
	opts Options
	up   *uploader
	buf  []byte

	mu       sync.Mutex
	prog     Progress
	lastProg time.Time
	input    atomic.Int64
}

func newBuilder(ctx context.Context, opts *Options) (*builder, error) {
	if opts == nil {
		return nil, errors.New("flist: nil build options")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	b := &builder{ctx: ctx, opts: o, up: newUploader(o.Store, o.Concurrency), buf: make([]byte, o.Chunking.Max)}
	b.prog.TotalBytes = -1
	return b, nil
}

func (b *builder) chunk(r interface{ Read([]byte) (int, error) }, size int64) ([]Chunk, error) {
	return chunkReader(b.ctx, r, size, &b.opts.Chunking, b.up, b.buf, func(n int) {
		b.mu.Lock()
		b.prog.Bytes += int64(n)
		b.mu.Unlock()
	})
}

func (b *builder) entry(path string, regular bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prog.Entries++
	if regular {
		b.prog.Files++
	}
	b.prog.Path = path
	b.reportLocked(false)
}

func (b *builder) reportLocked(done bool) {
	if b.opts.Progress == nil {
		return
	}
	now := time.Now()
	if !done && now.Sub(b.lastProg) < b.opts.ProgressInterval {
		return
	}
	b.lastProg = now
	b.prog.InputBytes = b.input.Load()
	b.prog.Done = done
	b.opts.Progress(b.prog)
}

// finish waits for uploads and fills the tree's metadata.
func (b *builder) finish(t *Tree, source string) (*Tree, error) {
	if err := b.up.wait(); err != nil {
		return nil, err
	}
	if err := b.ctx.Err(); err != nil {
		return nil, err
	}
	if t.Meta.Source == "" {
		t.Meta.Source = source
	}
	if b.opts.Source != "" {
		t.Meta.Source = b.opts.Source
	}
	t.Meta.Chunking = b.opts.Chunking.Name()
	if len(b.opts.Labels) > 0 {
		if t.Meta.Labels == nil {
			t.Meta.Labels = map[string]string{}
		}
		for k, v := range b.opts.Labels {
			t.Meta.Labels[k] = v
		}
	}
	t.Meta.Created = time.Now().UTC()
	b.mu.Lock()
	b.reportLocked(true)
	b.mu.Unlock()
	b.opts.Logger.Debug("flist built", "source", t.Meta.Source, "entries", b.prog.Entries, "bytes", b.prog.Bytes)
	return t, nil
}

// abort waits for in-flight uploads so no goroutine outlives the build.
func (b *builder) abort(err error) (*Tree, error) {
	_ = b.up.wait()
	return nil, err
}

func refuseDevice(path string) error {
	return fmt.Errorf("%w: %s is a device node; only admins may upload devices", ErrDeviceRefused, path)
}
