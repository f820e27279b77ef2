package flist

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
)

// imageFS is where image files come from: an OCI layout directory or an
// indexed tar archive (docker save, OCI archive).
type imageFS interface {
	open(name string) (io.ReadCloser, int64, error)
	exists(name string) bool
}

type dirImageFS string

func (d dirImageFS) open(name string) (io.ReadCloser, int64, error) {
	if _, err := CleanArchivePath(name); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is not a regular file", ErrBadArchive, name)
	}
	return f, st.Size(), nil
}

func (d dirImageFS) exists(name string) bool {
	st, err := os.Lstat(filepath.Join(string(d), filepath.FromSlash(name)))
	return err == nil && st.Mode().IsRegular()
}

type tarEntry struct{ off, size int64 }

// tarImageFS is an uncompressed tar file indexed by entry name.
type tarImageFS struct {
	f       *os.File
	entries map[string]tarEntry
}

// posReader tracks the position of reads and seeks so the offset of each
// tar entry's data is known (archive/tar seeks over content it skips).
type posReader struct {
	f   *os.File
	pos int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := p.f.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

func indexTar(f *os.File) (*tarImageFS, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	pr := &posReader{f: f}
	tr := tar.NewReader(pr)
	fs := &tarImageFS{f: f, entries: map[string]tarEntry{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v (truncated or corrupt?)", ErrBadArchive, err)
		}
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != '\x00' {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		fs.entries[name] = tarEntry{off: pr.pos, size: hdr.Size}
	}
	if len(fs.entries) == 0 {
		return nil, fmt.Errorf("%w: no files in archive", ErrBadArchive)
	}
	return fs, nil
}

func (t *tarImageFS) open(name string) (io.ReadCloser, int64, error) {
	e, ok := t.entries[name]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s missing from the archive", ErrBadArchive, name)
	}
	return io.NopCloser(io.NewSectionReader(t.f, e.off, e.size)), e.size, nil
}

func (t *tarImageFS) exists(name string) bool { _, ok := t.entries[name]; return ok }

// OCI and docker JSON documents (only the fields used).
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *ociPlatform      `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociPlatform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type ociIndex struct {
	MediaType string          `json:"mediaType"`
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Config    ociDescriptor   `json:"config"`
	Layers    []ociDescriptor `json:"layers"`
}

type ociConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		Volumes      map[string]struct{} `json:"Volumes"`
		WorkingDir   string              `json:"WorkingDir"`
		Labels       map[string]string   `json:"Labels"`
		StopSignal   string              `json:"StopSignal"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

type dockerManifest struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

var digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

func blobPath(digest string) (string, error) {
	if !digestRE.MatchString(digest) {
		return "", fmt.Errorf("%w: unsupported digest %q (want sha256:<64 hex>)", ErrBadArchive, digest)
	}
	return "blobs/sha256/" + digest[len("sha256:"):], nil
}

const maxJSON = 8 << 20

// readJSON reads a small JSON document, verifying its sha256 digest when
// one is given.
func readJSON(fs imageFS, name, digest string, v any) error {
	rc, size, err := fs.open(name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if size > maxJSON {
		return fmt.Errorf("%w: %s is %d bytes", ErrBadArchive, name, size)
	}
	data, err := io.ReadAll(io.LimitReader(rc, maxJSON))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, name, err)
	}
	if digest != "" {
		sum := sha256.Sum256(data)
		if "sha256:"+hex.EncodeToString(sum[:]) != digest {
			return fmt.Errorf("%w: %s does not match its digest %s (corrupt archive)", ErrBadArchive, name, digest)
		}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, name, err)
	}
	return nil
}

func (b *builder) wantPlatform() (string, string) {
	p := b.opts.Platform
	if p == "" {
		p = "linux/" + runtime.GOARCH
	}
	os, arch, _ := strings.Cut(p, "/")
	return os, arch
}

// pickManifest resolves an OCI index (possibly nested) to one image
// manifest descriptor.
func (b *builder) pickManifest(fs imageFS, idx *ociIndex, depth int) (ociDescriptor, error) {
	if depth > 4 {
		return ociDescriptor{}, fmt.Errorf("%w: index nesting too deep", ErrBadArchive)
	}
	var cands []ociDescriptor
	for _, m := range idx.Manifests {
		if b.opts.Image != "" && m.Annotations["org.opencontainers.image.ref.name"] != b.opts.Image &&
			m.Annotations["io.containerd.image.name"] != b.opts.Image && depth == 0 {
			continue
		}
		cands = append(cands, m)
	}
	if len(cands) == 0 {
		if b.opts.Image != "" {
			return ociDescriptor{}, fmt.Errorf("%w: no image %q in the index", ErrBadArchive, b.opts.Image)
		}
		return ociDescriptor{}, fmt.Errorf("%w: empty index", ErrBadArchive)
	}
	wantOS, wantArch := b.wantPlatform()
	pick := cands[0]
	if len(cands) > 1 {
		found := false
		for _, m := range cands {
			if m.Platform != nil && m.Platform.OS == wantOS && m.Platform.Architecture == wantArch {
				pick, found = m, true
				break
			}
		}
		if !found {
			for _, m := range cands {
				if m.Platform == nil || m.Platform.Architecture != "unknown" {
					pick = m
					break
				}
			}
		}
	}
	if strings.Contains(pick.MediaType, "index") || strings.Contains(pick.MediaType, "manifest.list") {
		p, err := blobPath(pick.Digest)
		if err != nil {
			return ociDescriptor{}, err
		}
		var sub ociIndex
		if err := readJSON(fs, p, pick.Digest, &sub); err != nil {
			return ociDescriptor{}, err
		}
		return b.pickManifest(fs, &sub, depth+1)
	}
	return pick, nil
}

func (b *builder) buildOCI(fs imageFS, source string) (*Tree, error) {
	var idx ociIndex
	if err := readJSON(fs, "index.json", "", &idx); err != nil {
		return nil, err
	}
	md, err := b.pickManifest(fs, &idx, 0)
	if err != nil {
		return nil, err
	}
	mp, err := blobPath(md.Digest)
	if err != nil {
		return nil, err
	}
	var man ociManifest
	if err := readJSON(fs, mp, md.Digest, &man); err != nil {
		return nil, err
	}
	cp, err := blobPath(man.Config.Digest)
	if err != nil {
		return nil, err
	}
	var cfg ociConfig
	if err := readJSON(fs, cp, man.Config.Digest, &cfg); err != nil {
		return nil, err
	}
	var layers []layerRef
	for _, l := range man.Layers {
		p, err := blobPath(l.Digest)
		if err != nil {
			return nil, err
		}
		if strings.Contains(l.MediaType, "nondistributable") || strings.Contains(l.MediaType, "foreign") {
			if !fs.exists(p) {
				return nil, fmt.Errorf("%w: foreign layer %s is not in the archive", ErrBadArchive, l.Digest)
			}
		}
		layers = append(layers, layerRef{path: p, digest: l.Digest, size: l.Size})
	}
	if name := md.Annotations["org.opencontainers.image.ref.name"]; name != "" && source == "" {
		source = name
	}
	return b.applyImage(fs, layers, &cfg, source)
}

func (b *builder) buildDockerSave(fs imageFS, source string) (*Tree, error) {
	var mans []dockerManifest
	if err := readJSON(fs, "manifest.json", "", &mans); err != nil {
		return nil, err
	}
	if len(mans) == 0 {
		return nil, fmt.Errorf("%w: manifest.json lists no image", ErrBadArchive)
	}
	m := mans[0]
	if b.opts.Image != "" {
		found := false
		for _, c := range mans {
			for _, tag := range c.RepoTags {
				if tag == b.opts.Image {
					m, found = c, true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: no image %q in the archive", ErrBadArchive, b.opts.Image)
		}
	}
	var cfg ociConfig
	cfgPath := strings.TrimPrefix(path.Clean("/"+m.Config), "/")
	cfgDigest := ""
	if strings.HasPrefix(cfgPath, "blobs/sha256/") {
		cfgDigest = "sha256:" + strings.TrimPrefix(cfgPath, "blobs/sha256/")
	} else if h := strings.TrimSuffix(cfgPath, ".json"); len(h) == 64 {
		cfgDigest = "sha256:" + h
	}
	if !digestRE.MatchString(cfgDigest) {
		cfgDigest = ""
	}
	if err := readJSON(fs, cfgPath, cfgDigest, &cfg); err != nil {
		return nil, err
	}
	var layers []layerRef
	for i, l := range m.Layers {
		p := strings.TrimPrefix(path.Clean("/"+l), "/")
		lr := layerRef{path: p, size: -1}
		if strings.HasPrefix(p, "blobs/sha256/") {
			lr.digest = "sha256:" + strings.TrimPrefix(p, "blobs/sha256/")
		} else if i < len(cfg.RootFS.DiffIDs) {
			lr.digest, lr.diffID = cfg.RootFS.DiffIDs[i], true
		}
		layers = append(layers, lr)
	}
	if source == "" && len(m.RepoTags) > 0 {
		source = m.RepoTags[0]
	}
	return b.applyImage(fs, layers, &cfg, source)
}

type layerRef struct {
	path   string
	digest string // sha256 of the blob ("" = unchecked)
	diffID bool   // digest is a diff_id: checked only when the blob is uncompressed
	size   int64  // -1 unknown
}

// hashingReader hashes what passes through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

func (b *builder) applyImage(fs imageFS, layers []layerRef, cfg *ociConfig, source string) (*Tree, error) {
	if len(layers) == 0 {
		return nil, fmt.Errorf("%w: image has no layers", ErrBadArchive)
	}
	t := NewTree()
	for i, l := range layers {
		rc, size, err := fs.open(l.path)
		if err != nil {
			return nil, err
		}
		if l.size >= 0 && size != l.size {
			rc.Close()
			return nil, fmt.Errorf("%w: layer %s is %d bytes, manifest says %d", ErrBadArchive, l.path, size, l.size)
		}
		hr := &hashingReader{r: rc, h: sha256.New()}
		br := bufio.NewReaderSize(hr, 1<<16)
		compressed := DetectCompression(br) != Uncompressed
		err = b.applyLayer(t, br, true)
		if err == nil {
			// Hash the rest (tar padding) so the digest covers the blob.
			_, err = io.Copy(io.Discard, br)
		}
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i+1, l.path, err)
		}
		if l.digest != "" && !(l.diffID && compressed) {
			if got := "sha256:" + hex.EncodeToString(hr.h.Sum(nil)); got != l.digest {
				return nil, fmt.Errorf("%w: layer %d (%s) has digest %s, expected %s (corrupt archive)", ErrBadArchive, i+1, l.path, got, l.digest)
			}
		}
	}
	img := &ImageConfig{
		Entrypoint:   cfg.Config.Entrypoint,
		Cmd:          cfg.Config.Cmd,
		Env:          cfg.Config.Env,
		WorkingDir:   cfg.Config.WorkingDir,
		User:         cfg.Config.User,
		StopSignal:   cfg.Config.StopSignal,
		Labels:       cfg.Config.Labels,
		Architecture: cfg.Architecture,
		OS:           cfg.OS,
	}
	for p := range cfg.Config.ExposedPorts {
		img.ExposedPorts = append(img.ExposedPorts, p)
	}
	sort.Strings(img.ExposedPorts)
	for v := range cfg.Config.Volumes {
		img.Volumes = append(img.Volumes, v)
	}
	sort.Strings(img.Volumes)
	t.Meta.Image = img
	if len(cfg.Config.Labels) > 0 {
		t.Meta.Labels = map[string]string{}
		for k, v := range cfg.Config.Labels {
			t.Meta.Labels[k] = v
		}
	}
	t.Meta.Source = source
	return t, nil
}

// BuildOCILayout builds a tree from an OCI image layout directory (with
// index.json and blobs/): layers applied in order with whiteouts, every
// blob checked against its digest, the image config kept in Meta.Image.
func BuildOCILayout(ctx context.Context, dir string, opts *Options) (*Tree, error) {
	b, err := newBuilder(ctx, opts)
	if err != nil {
		return nil, err
	}
	t, err := b.buildOCI(dirImageFS(dir), "")
	if err != nil {
		return b.abort(err)
	}
	return b.finish(t, filepath.Base(filepath.Clean(dir)))
}

// Kind is the kind of build input.
type Kind string

const (
	KindDir        Kind = "dir"
	KindTar        Kind = "tar"
	KindOCILayout  Kind = "oci-layout"
	KindOCIArchive Kind = "oci-archive"
	KindDockerSave Kind = "docker-save"
)

// Build builds a tree from src, detecting its kind: a directory (an OCI
// layout if it holds index.json and oci-layout, an unpacked docker save if
// it holds manifest.json, else a root file system), or a file (a docker save
// or OCI archive tar, or a root file system tar; each possibly gzip or zstd
// compressed).
func Build(ctx context.Context, src string, opts *Options) (*Tree, Kind, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, "", fmt.Errorf("flist: %w", err)
	}
	b, err := newBuilder(ctx, opts)
	if err != nil {
		return nil, "", err
	}
	name := filepath.Base(filepath.Clean(src))
	if st.IsDir() {
		fs := dirImageFS(src)
		switch {
		case fs.exists("index.json") && fs.exists("oci-layout"):
			t, err := b.buildOCI(fs, "")
			if err != nil {
				return nil, "", errors.Join(err, b.up.wait())
			}
			t, err = b.finish(t, name)
			return t, KindOCILayout, err
		case fs.exists("manifest.json"):
			t, err := b.buildDockerSave(fs, "")
			if err != nil {
				_ = b.up.wait()
				return nil, "", err
			}
			t, err = b.finish(t, name)
			return t, KindDockerSave, err
		}
		t, err := BuildDir(ctx, src, opts)
		return t, KindDir, err
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, "", fmt.Errorf("flist: %w", err)
	}
	defer f.Close()
	return b.buildFile(f, st.Size(), name)
}

// BuildStream builds a tree from an archive stream of any supported kind
// (tar, tar.gz, tar.zst, docker save, OCI archive). The stream is spooled to
// a temporary file first, since image archives need random access.
func BuildStream(ctx context.Context, r io.Reader, name string, opts *Options) (*Tree, Kind, error) {
	b, err := newBuilder(ctx, opts)
	if err != nil {
		return nil, "", err
	}
	f, err := os.CreateTemp(b.opts.TempDir, "zos-flist-upload-*")
	if err != nil {
		return nil, "", fmt.Errorf("flist: spool: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, &ctxReader{ctx: ctx, r: r})
	if err != nil {
		return nil, "", fmt.Errorf("flist: spool upload: %w", err)
	}
	return b.buildFile(f, n, name)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// buildFile builds from an archive file of any kind.
func (b *builder) buildFile(f *os.File, size int64, name string) (*Tree, Kind, error) {
	b.mu.Lock()
	b.prog.TotalBytes = size
	b.mu.Unlock()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	br := bufio.NewReaderSize(f, 1<<16)
	comp := DetectCompression(br)
	tarFile := f
	if comp != Uncompressed {
		// Is it an image archive? Scan the decompressed headers.
		isImage, err := scanForImage(br)
		if err != nil {
			return nil, "", err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, "", err
		}
		if !isImage {
			t := NewTree()
			if err := b.applyLayer(t, f, false); err != nil {
				_ = b.up.wait()
				return nil, "", err
			}
			t, err := b.finish(t, name)
			return t, KindTar, err
		}
		// Spool the decompressed image archive for random access.
		tmp, err := os.CreateTemp(b.opts.TempDir, "zos-flist-image-*")
		if err != nil {
			return nil, "", fmt.Errorf("flist: spool: %w", err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		zr, _, err := Decompress(f)
		if err != nil {
			return nil, "", err
		}
		_, err = io.Copy(tmp, &ctxReader{ctx: b.ctx, r: zr})
		zr.Close()
		if err != nil {
			return nil, "", fmt.Errorf("%w: decompress: %v", ErrBadArchive, err)
		}
		tarFile = tmp
	}
	fs, err := indexTar(tarFile)
	if err != nil {
		return nil, "", err
	}
	var t *Tree
	var kind Kind
	switch {
	case fs.exists("manifest.json"):
		kind = KindDockerSave
		t, err = b.buildDockerSave(fs, "")
	case fs.exists("index.json") && fs.exists("oci-layout"):
		kind = KindOCIArchive
		t, err = b.buildOCI(fs, "")
	default:
		kind = KindTar
		if _, err := tarFile.Seek(0, io.SeekStart); err != nil {
			return nil, "", err
		}
		t = NewTree()
		err = b.applyLayer(t, tarFile, false)
	}
	if err != nil {
		_ = b.up.wait()
		return nil, "", err
	}
	t, err = b.finish(t, name)
	return t, kind, err
}

// scanForImage reads a compressed tar's headers and reports whether it is a
// docker save or OCI archive.
func scanForImage(r io.Reader) (bool, error) {
	zr, _, err := Decompress(r)
	if err != nil {
		return false, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var manifest, index, layout bool
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, fmt.Errorf("%w: %v (truncated or corrupt?)", ErrBadArchive, err)
		}
		switch strings.TrimPrefix(path.Clean("/"+hdr.Name), "/") {
		case "manifest.json":
			manifest = true
		case "index.json":
			index = true
		case "oci-layout":
			layout = true
		}
	}
	return manifest || (index && layout), nil
}
