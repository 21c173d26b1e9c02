package chartrender

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

// The media types of a Helm chart stored in an OCI registry, as `helm
// push` writes it and `helm pull oci://` (and Harvester's helm-controller)
// read it.
const (
	ChartConfigMediaType types.MediaType = "application/vnd.cncf.helm.config.v1+json"
	ChartLayerMediaType  types.MediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// Package writes the chart in dir as NAME-VERSION.tgz into out, as `helm
// package` does, and returns its path.
func Package(dir, out string) (string, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return "", fmt.Errorf("loading the chart %s: %w", dir, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	path, err := chartutil.Save(ch, out)
	if err != nil {
		return "", fmt.Errorf("packaging the chart: %w", err)
	}
	return path, nil
}

// Push uploads a packaged chart to repo (oci://host/path, or host/path)
// as REPO/NAME:VERSION, the reference `helm push` makes, with the
// credentials of the Docker config, and returns the reference with its
// digest. The layout is `helm push`'s: the chart's metadata as the config,
// the archive as the one layer.
func Push(tgz, repo string, opts ...remote.Option) (string, error) {
	data, err := os.ReadFile(tgz)
	if err != nil {
		return "", err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", filepath.Base(tgz), err)
	}
	cfg, err := json.Marshal(ch.Metadata)
	if err != nil {
		return "", err
	}
	tag, err := name.NewTag(fmt.Sprintf("%s/%s:%s", strings.TrimSuffix(strings.TrimPrefix(repo, "oci://"), "/"), ch.Metadata.Name, ch.Metadata.Version))
	if err != nil {
		return "", err
	}
	opts = append([]remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}, opts...)
	cfgLayer, chartLayer := static.NewLayer(cfg, ChartConfigMediaType), static.NewLayer(data, ChartLayerMediaType)
	for _, l := range []v1.Layer{cfgLayer, chartLayer} {
		if err := remote.WriteLayer(tag.Repository, l, opts...); err != nil {
			return "", fmt.Errorf("uploading to %s: %w", tag.Repository, err)
		}
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: describe(cfg, ChartConfigMediaType), Layers: []v1.Descriptor{describe(data, ChartLayerMediaType)},
		Annotations: map[string]string{
			"org.opencontainers.image.title": ch.Metadata.Name, "org.opencontainers.image.version": ch.Metadata.Version,
			"org.opencontainers.image.description": ch.Metadata.Description, "org.opencontainers.image.url": ch.Metadata.Home,
		}}
	raw, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	if err := remote.Put(tag, manifest(raw), opts...); err != nil {
		return "", fmt.Errorf("pushing %s: %w", tag, err)
	}
	sum := sha256.Sum256(raw)
	return tag.String() + "@sha256:" + hex.EncodeToString(sum[:]), nil
}

func describe(b []byte, mt types.MediaType) v1.Descriptor {
	sum := sha256.Sum256(b)
	return v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

// manifest is a raw OCI manifest remote.Put can write.
type manifest []byte

func (m manifest) RawManifest() ([]byte, error)        { return m, nil }
func (m manifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
