// Package chartrepo serves one chart as a Helm chart repository: index.yaml
// and the chart's package, as `helm repo index` lays them out. Harvester's
// Addon installs a chart from a repository URL; in an air gap, this one is
// served from inside the cluster by the image the cluster already has.
package chartrepo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"time"

	"sigs.k8s.io/yaml"
)

// Repo is a chart packaged once, and its index.
type Repo struct {
	Name, Version string
	// Package is the chart's .tgz, Index the repository's index.yaml.
	Package, Index []byte
}

// New packages the chart in dir of files (Chart.yaml at its root) as Helm
// does: a gzipped tar of its files under a directory named for the chart,
// in a stable order, with the time created (so one build serves the same
// bytes, and the digest in the index does not change between restarts).
func New(files fs.FS, dir string, created time.Time) (*Repo, error) {
	raw, err := fs.ReadFile(files, path.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("reading the chart's Chart.yaml: %w", err)
	}
	var meta map[string]any
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("the chart's Chart.yaml: %w", err)
	}
	name, _ := meta["name"].(string)
	version, _ := meta["version"].(string)
	if name == "" || version == "" {
		return nil, fmt.Errorf("the chart's Chart.yaml names no name or version")
	}
	var paths []string
	if err := fs.WalkDir(files, dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			paths = append(paths, p)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("reading the chart: %w", err)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, p := range paths {
		data, err := fs.ReadFile(files, p)
		if err != nil {
			return nil, err
		}
		rel := p[len(dir)+1:]
		hdr := &tar.Header{Name: name + "/" + rel, Mode: 0o644, Size: int64(len(data)), ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(buf.Bytes())
	entry := map[string]any{}
	for k, v := range meta {
		entry[k] = v
	}
	entry["digest"] = hex.EncodeToString(sum[:])
	entry["urls"] = []string{fileName(name, version)}
	entry["created"] = created.UTC().Format(time.RFC3339)
	index, err := yaml.Marshal(map[string]any{
		"apiVersion": "v1",
		"entries":    map[string]any{name: []any{entry}},
		"generated":  created.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return nil, err
	}
	return &Repo{Name: name, Version: version, Package: buf.Bytes(), Index: index}, nil
}

func fileName(name, version string) string { return name + "-" + version + ".tgz" }

// ServeHTTP answers GET /index.yaml and GET /<name>-<version>.tgz, and 404
// to anything else.
func (r *Repo) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	switch req.URL.Path {
	case "/index.yaml":
		w.Header().Set("Content-Type", "application/x-yaml")
		_, _ = w.Write(r.Index)
	case "/" + fileName(r.Name, r.Version):
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(r.Package)
	default:
		http.NotFound(w, req)
	}
}
