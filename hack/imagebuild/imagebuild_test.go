package imagebuild

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const testVersion = "v0.0.0-test"

// amd64Binary builds the real netconf-migrator for linux/amd64 as `make
// image` does, but for -trimpath, which would rebuild every dependency.
func amd64Binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "netconf-migrator")
	// From the product's module (the repository's root), as make image builds it.
	cmd := exec.Command("go", "-C", filepath.Join("..", ".."), "build", "-ldflags", "-s -w -X github.com/harvester/netconf-migrator/internal/version.Version="+testVersion,
		"-o", bin, "./cmd/netconf-migrator")
	// cgo as the tests build (a C compiler on the machine turns it on):
	// CGO_ENABLED=0 there would compile every dependency once more. The
	// image's static build is make image's; the test checks the image.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func options(t *testing.T, amd64 string) Options {
	t.Helper()
	// The arm64 slot holds a stand-in file: the test checks the image's
	// structure for arm64 and runs only the amd64 binary.
	arm64 := filepath.Join(t.TempDir(), "arm64")
	if err := os.WriteFile(arm64, []byte("arm64 binary stand-in"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{
		Binaries:   map[string]string{"linux/amd64": amd64, "linux/arm64": arm64},
		Repository: "ghcr.io/harvester/netconf-migrator", Version: testVersion, Revision: "0123456789abcdef",
		Created: time.Unix(1764000000, 0).UTC(), Source: "https://github.com/harvester/netconf-migrator",
	}
}

// build writes the layout and its archive into a new directory and
// returns the archive's path.
func build(t *testing.T, o Options) (archive string, idx v1.ImageIndex, images map[string]v1.Image) {
	t.Helper()
	idx, images, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := o.Ref()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteLayout(filepath.Join(dir, "oci"), idx, ref); err != nil {
		t.Fatal(err)
	}
	archive = filepath.Join(dir, "netconf-migrator.oci.tar")
	if err := WriteArchive(archive, filepath.Join(dir, "oci"), o.Created); err != nil {
		t.Fatal(err)
	}
	return archive, idx, images
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// untar unpacks an archive into a new directory.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImage builds the image twice from the same binaries: the same
// digests and byte-identical archives; then opens the archive as an
// importer would and checks each platform's config, and runs the amd64
// binary taken out of its layer.
func TestImage(t *testing.T) {
	o := options(t, amd64Binary(t))
	archive1, idx1, images := build(t, o)
	archive2, idx2, _ := build(t, o)
	d1, err := idx1.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := idx2.Digest()
	if d1 != d2 || sha(t, archive1) != sha(t, archive2) {
		t.Errorf("not reproducible: index %s vs %s, archives %s vs %s", d1, d2, sha(t, archive1), sha(t, archive2))
	}
	later := o
	later.Created = o.Created.Add(time.Second)
	if idx3, _, err := Build(later); err != nil {
		t.Fatal(err)
	} else if d3, _ := idx3.Digest(); d3 == d1 {
		t.Error("a different creation time gave the same digest: the test proves nothing")
	}

	p, err := layout.FromPath(untar(t, archive1))
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	rm, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.Manifests) != 1 || rm.Manifests[0].Annotations["io.containerd.image.name"] != "ghcr.io/harvester/netconf-migrator:"+testVersion ||
		rm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != testVersion || rm.Manifests[0].Digest != d1 {
		t.Fatalf("the layout's index: %+v", rm.Manifests)
	}
	idx, err := root.ImageIndex(d1)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.Annotations["org.opencontainers.image.version"] != testVersion || im.Annotations["org.opencontainers.image.revision"] != "0123456789abcdef" {
		t.Errorf("index annotations %v", im.Annotations)
	}
	seen := map[string]bool{}
	for _, m := range im.Manifests {
		plat := m.Platform.OS + "/" + m.Platform.Architecture
		seen[plat] = true
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != plat || (cf.Architecture == "arm64") != (cf.Variant == "v8") {
			t.Errorf("%s: config says %s/%s %s", plat, cf.OS, cf.Architecture, cf.Variant)
		}
		if strings.Join(cf.Config.Entrypoint, " ") != "/netconf-migrator" || cf.Config.User != "65532:65532" {
			t.Errorf("%s: entrypoint %v, user %q", plat, cf.Config.Entrypoint, cf.Config.User)
		}
		if cf.Config.Labels["org.opencontainers.image.version"] != testVersion {
			t.Errorf("%s: labels %v", plat, cf.Config.Labels)
		}
		if plat == "linux/amd64" {
			runFromLayer(t, img)
		}
	}
	if !seen["linux/amd64"] || !seen["linux/arm64"] {
		t.Errorf("platforms %v", seen)
	}

	// docker load's format, for people with Docker.
	ref, _ := o.Ref()
	dockerTar := filepath.Join(t.TempDir(), "amd64.docker.tar")
	if err := WriteDockerArchive(dockerTar, images["linux/amd64"], ref); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(dockerTar, &ref)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := images["linux/amd64"].ConfigName()
	if got, _ := loaded.ConfigName(); got != want {
		t.Errorf("the docker archive holds config %s, want %s", got, want)
	}
}

// runFromLayer takes the binary and /etc/passwd out of the image's layer
// and runs `netconf-migrator version`.
func runFromLayer(t *testing.T, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers: %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var bin, passwd []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Name {
		case "netconf-migrator":
			if h.Mode&0o111 == 0 || h.Uid != 0 {
				t.Errorf("the binary's mode %o, owner %d", h.Mode, h.Uid)
			}
			bin, _ = io.ReadAll(tr)
		case "etc/passwd":
			passwd, _ = io.ReadAll(tr)
		}
	}
	if !strings.Contains(string(passwd), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no numeric non-root user:\n%s", passwd)
	}
	path := filepath.Join(t.TempDir(), "netconf-migrator")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != testVersion {
		t.Errorf("the binary from the layer says %q (%v), want %s", out, err, testVersion)
	}
}
