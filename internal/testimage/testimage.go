// Package testimage writes OCI image layouts and docker save archives from
// layer tars, for tests and benchmarks of the flist builders and of
// containers from images.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Config is the part of an image config the tests set.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func writeBlob(dir string, b []byte) (string, error) {
	d := digest(b)
	p := filepath.Join(dir, "blobs", "sha256", d[len("sha256:"):])
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return d, os.WriteFile(p, b, 0o644)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func configJSON(cfg Config, layers [][]byte) []byte {
	var diffIDs []string
	for _, l := range layers {
		diffIDs = append(diffIDs, digest(l))
	}
	c := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": cfg.Entrypoint,
			"Cmd":        cfg.Cmd,
			"Env":        cfg.Env,
			"WorkingDir": cfg.WorkingDir,
			"Labels":     cfg.Labels,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	b, _ := json.Marshal(c)
	return b
}

// WriteOCILayout writes an OCI image layout to dir with the given
// (uncompressed) layer tars, gzip-compressing them as blobs. It returns the
// manifest digest.
func WriteOCILayout(dir string, cfg Config, layers [][]byte, refName string) (string, error) {
	cfgDigest, err := writeBlob(dir, configJSON(cfg, layers))
	if err != nil {
		return "", err
	}
	cfgBytes := configJSON(cfg, layers)
	var descs []map[string]any
	for _, l := range layers {
		z := gz(l)
		d, err := writeBlob(dir, z)
		if err != nil {
			return "", err
		}
		descs = append(descs, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(z)})
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": len(cfgBytes)},
		"layers":        descs,
	})
	manDigest, err := writeBlob(dir, man)
	if err != nil {
		return "", err
	}
	idx, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []map[string]any{{
			"mediaType":   "application/vnd.oci.image.manifest.v1+json",
			"digest":      manDigest,
			"size":        len(man),
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{"org.opencontainers.image.ref.name": refName},
		}},
	})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return "", err
	}
	return manDigest, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// DockerSave returns a legacy `docker save` archive (uncompressed layers in
// <id>/layer.tar, manifest.json, <config>.json) of the layers.
func DockerSave(cfg Config, layers [][]byte, tag string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	var paths []string
	for i, l := range layers {
		id := fmt.Sprintf("%064x", i+1)
		if err := tw.WriteHeader(&tar.Header{Name: id + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
			return nil, err
		}
		if err := add(id+"/layer.tar", l); err != nil {
			return nil, err
		}
		paths = append(paths, id+"/layer.tar")
	}
	cfgBytes := configJSON(cfg, layers)
	cfgName := digest(cfgBytes)[len("sha256:"):] + ".json"
	if err := add(cfgName, cfgBytes); err != nil {
		return nil, err
	}
	man, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": paths}})
	if err := add("manifest.json", man); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
