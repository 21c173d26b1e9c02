// Command releasecli builds the CLI a release publishes: for each platform
// a static kubectl-netconf_migrator (the binary, named as kubectl finds a
// plugin), packed with the LICENSE into a .tar.gz (a .zip on Windows) whose
// bytes depend only on the sources, the version and the time given (file
// times, owners and order fixed), its CycloneDX SBOM beside it (.cdx.json),
// then SHA256SUMS and the krew manifest (netconf-migrator.yaml) naming
// each archive's URL and checksum.
//
//	go -C hack run ./releasecli -version v0.2.0 -created 1764000000 -out $PWD/dist/cli
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/hack/sbom"
)

// Platforms are the ones released: what kubectl runs on.
var Platforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"}

const (
	pluginName = "netconf-migrator"
	binName    = "kubectl-netconf_migrator"
	module     = "github.com/harvester/netconf-migrator"
)

// Options are one release's inputs.
type Options struct {
	Root      string // the repository
	Version   string // vX.Y.Z
	Created   time.Time
	Out       string
	Platforms []string
	// URL is where an archive will be downloaded from (%[1]s the version,
	// %[2]s its name).
	URL string
	// Build writes the binary for platform to out; nil builds it with go
	// build (static, -trimpath, the version stamped: releaseBuild).
	Build func(o Options, platform, out string) error
	// NoSBOM leaves out the SBOM beside each archive, for a Build that
	// writes no Go binary to read one from.
	NoSBOM bool
}

// Archive is one platform's release file.
type Archive struct {
	Platform, Name, SHA256, Bin string
}

func main() {
	o := Options{}
	var created int64
	var platforms string
	flag.StringVar(&o.Root, "root", "..", "the repository")
	flag.StringVar(&o.Version, "version", "", "the version, vX.Y.Z")
	flag.Int64Var(&created, "created", 0, "the time every file in the archives carries (unix seconds: the commit's)")
	flag.StringVar(&o.Out, "out", "", "where the archives, SHA256SUMS and the krew manifest go")
	flag.StringVar(&platforms, "platforms", strings.Join(Platforms, ","), "GOOS/GOARCH, comma-separated")
	flag.StringVar(&o.URL, "url", "https://github.com/harvester/netconf-migrator/releases/download/%[1]s/%[2]s", "an archive's download URL (%[1]s the version, %[2]s its name)")
	flag.Parse()
	o.Created, o.Platforms = time.Unix(created, 0).UTC(), strings.Split(platforms, ",")
	if o.Version == "" || o.Out == "" {
		fmt.Fprintln(os.Stderr, "releasecli: -version and -out are required")
		os.Exit(2)
	}
	if _, err := Release(o); err != nil {
		fmt.Fprintln(os.Stderr, "releasecli:", err)
		os.Exit(1)
	}
}

// Release builds every archive, SHA256SUMS and the krew manifest into
// o.Out.
func Release(o Options) ([]Archive, error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	license, err := os.ReadFile(filepath.Join(o.Root, "LICENSE"))
	if err != nil {
		return nil, fmt.Errorf("reading the LICENSE every archive carries: %w", err)
	}
	var out []Archive
	for _, p := range o.Platforms {
		a, err := build(o, p, license)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	var sums strings.Builder
	for _, a := range out {
		fmt.Fprintf(&sums, "%s  %s\n", a.SHA256, a.Name)
	}
	if err := os.WriteFile(filepath.Join(o.Out, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		return nil, err
	}
	manifest, err := Manifest(o, out)
	if err != nil {
		return nil, err
	}
	return out, os.WriteFile(filepath.Join(o.Out, pluginName+".yaml"), manifest, 0o644)
}

func build(o Options, platform string, license []byte) (Archive, error) {
	goos, goarch, ok := strings.Cut(platform, "/")
	if !ok {
		return Archive{}, fmt.Errorf("%q is not GOOS/GOARCH", platform)
	}
	bin := binName
	if goos == "windows" {
		bin += ".exe"
	}
	tmp, err := os.MkdirTemp("", "releasecli-")
	if err != nil {
		return Archive{}, err
	}
	defer os.RemoveAll(tmp)
	buildFn := o.Build
	if buildFn == nil {
		buildFn = goBuild
	}
	if err := buildFn(o, platform, filepath.Join(tmp, bin)); err != nil {
		return Archive{}, err
	}
	exe, err := os.ReadFile(filepath.Join(tmp, bin))
	if err != nil {
		return Archive{}, err
	}
	files := []file{{"LICENSE", license, 0o644}, {bin, exe, 0o755}}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	name := fmt.Sprintf("%s_%s_%s_%s", binName, o.Version, goos, goarch)
	if goos == "windows" {
		name += ".zip"
		err = writeZip(&buf, files, o.Created)
	} else {
		name += ".tar.gz"
		err = writeTarGz(&buf, files, o.Created)
	}
	if err != nil {
		return Archive{}, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, name), buf.Bytes(), 0o644); err != nil {
		return Archive{}, err
	}
	if !o.NoSBOM {
		// Beside the archive: what it links, for scanners and policies.
		doc, err := sbom.Of(filepath.Join(tmp, bin), o.Version)
		if err != nil {
			return Archive{}, err
		}
		if err := os.WriteFile(filepath.Join(o.Out, name+".cdx.json"), doc, 0o644); err != nil {
			return Archive{}, err
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	return Archive{Platform: platform, Name: name, SHA256: hex.EncodeToString(sum[:]), Bin: bin}, nil
}

// goBuild builds the static binary for platform, as the image's are built.
func goBuild(o Options, platform, out string) error {
	if b, err := releaseBuild(o, platform, out).CombinedOutput(); err != nil {
		return fmt.Errorf("building for %s: %w\n%s", platform, err, b)
	}
	return nil
}

// releaseBuild is the go build of a released binary: static, without the
// builder's paths or VCS state (so two builds of one commit are the same
// bytes), stripped, the version stamped.
func releaseBuild(o Options, platform, out string) *exec.Cmd {
	goos, goarch, _ := strings.Cut(platform, "/")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags(o), "-o", out, "./cmd/netconf-migrator")
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	return cmd
}

func ldflags(o Options) string {
	return "-s -w -X " + module + "/internal/version.Version=" + o.Version
}

type file struct {
	name string
	data []byte
	mode int64
}

func writeTarGz(w io.Writer, files []file, at time.Time) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	gz.ModTime = at // the gzip header's time, like the entries'
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: at, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func writeZip(w io.Writer, files []file, at time.Time) error {
	zw := zip.NewWriter(w)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: at}
		h.SetMode(os.FileMode(f.mode))
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := fw.Write(f.data); err != nil {
			return err
		}
	}
	return zw.Close()
}

// Manifest is the krew plugin manifest for the archives.
func Manifest(o Options, archives []Archive) ([]byte, error) {
	var platforms []any
	for _, a := range archives {
		goos, goarch, _ := strings.Cut(a.Platform, "/")
		platforms = append(platforms, map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"os": goos, "arch": goarch}},
			"uri":      fmt.Sprintf(o.URL, o.Version, a.Name),
			"sha256":   a.SHA256,
			"bin":      a.Bin,
		})
	}
	return yaml.Marshal(map[string]any{
		"apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
		"kind":       "Plugin",
		"metadata":   map[string]any{"name": pluginName},
		"spec": map[string]any{
			"version":          o.Version,
			"homepage":         "https://github.com/harvester/netconf-migrator",
			"shortDescription": "Migrate CNI configs of NetworkAttachmentDefinitions to the flat form",
			"description": "Finds NetworkAttachmentDefinitions whose spec.config holds a legacy nested or\n" +
				"double-encoded NetConf payload (written by clients built against\n" +
				"containernetworking/cni v1.2 and later) and rewrites them into the flat CNI\n" +
				"form, in place or by replacing them past Harvester's webhooks, with dry\n" +
				"runs, signed backups and rollback. Also converts manifest files offline.",
			"platforms": platforms,
		},
	})
}
