package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTheReleaseIsReproducibleAndKrewAccepts builds the release twice from
// the same sources and time: the archives, SHA256SUMS and the krew
// manifest are byte for byte the same. Each archive holds the LICENSE and
// the binary under the name kubectl finds a plugin by (executable, .exe on
// Windows); the Linux one runs and says its version. krew's own manifest
// validator (validate-krew-manifest, the one krew-index runs) accepts the
// manifest; installing needs kubectl krew, which the suite lacks.
func TestTheReleaseIsReproducibleAndKrewAccepts(t *testing.T) {
	// Every platform's archive from the same binary bytes and time, twice
	// (Go's -trimpath builds are reproducible themselves; cross-building
	// six binaries twice is make release-cli's work, not CI's); then the
	// Linux one built for real, once, to run it.
	fake := func(o Options, platform, out string) error {
		return os.WriteFile(out, []byte("binary for "+platform+" "+o.Version), 0o755)
	}
	o := Options{Root: filepath.Join("..", ".."), Version: "v0.2.0", Created: time.Unix(1764000000, 0).UTC(),
		Platforms: Platforms, URL: "https://github.com/harvester/netconf-migrator/releases/download/%[1]s/%[2]s", Build: fake, NoSBOM: true}
	var outs []string
	for range 2 {
		o.Out = t.TempDir()
		if _, err := Release(o); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, o.Out)
	}
	entries, _ := os.ReadDir(outs[0])
	if len(entries) != len(Platforms)+2 {
		t.Errorf("%d files released, want an archive per platform, SHA256SUMS and the manifest", len(entries))
	}
	for _, e := range entries {
		a, errA := os.ReadFile(filepath.Join(outs[0], e.Name()))
		b, errB := os.ReadFile(filepath.Join(outs[1], e.Name()))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two releases of the same inputs (%v, %v)", e.Name(), errA, errB)
		}
	}
	sums, _ := os.ReadFile(filepath.Join(outs[0], "SHA256SUMS"))
	manifest, _ := os.ReadFile(filepath.Join(outs[0], "netconf-migrator.yaml"))
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, _, _ := strings.Cut(line, "  ")
		if !strings.Contains(string(manifest), "sha256: "+sum) {
			t.Errorf("the manifest lacks %s", line)
		}
	}

	// The Linux archive: LICENSE and an executable named for kubectl.
	raw, _ := os.ReadFile(filepath.Join(outs[0], "kubectl-netconf_migrator_v0.2.0_linux_amd64.tar.gz"))
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	found := map[string]int64{}
	dir := t.TempDir()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found[h.Name] = h.Mode
		data, _ := io.ReadAll(tr)
		if err := os.WriteFile(filepath.Join(dir, h.Name), data, os.FileMode(h.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	if found["LICENSE"] != 0o644 || found["kubectl-netconf_migrator"] != 0o755 || len(found) != 2 {
		t.Errorf("linux archive holds %v", found)
	}
	// Built for real: it runs and says its version. With the go command's
	// defaults and the release's -ldflags, not releaseBuild's static,
	// -trimpath build: those flags change every package's build, and
	// compiling client-go and controller-runtime once more only for this
	// would cost CI minutes on two cores (TestTheReleaseBuildIsStatic
	// checks the flags). What is checked here does not depend on them.
	real := o
	real.Platforms, real.Out, real.NoSBOM = []string{runtime.GOOS + "/" + runtime.GOARCH}, t.TempDir(), false
	real.Build = func(o Options, platform, out string) error {
		cmd := exec.Command("go", "build", "-ldflags", ldflags(o), "-o", out, "./cmd/netconf-migrator")
		cmd.Dir = o.Root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w\n%s", err, b)
		}
		return nil
	}
	if _, err := Release(real); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(real.Out, "kubectl-netconf_migrator_v0.2.0_"+runtime.GOOS+"_"+runtime.GOARCH+".tar.gz"))
	gz, err = gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr = tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		data, _ := io.ReadAll(tr)
		_ = os.WriteFile(filepath.Join(dir, h.Name), data, os.FileMode(h.Mode))
	}
	if out, err := exec.Command(filepath.Join(dir, "kubectl-netconf_migrator"), "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "v0.2.0") {
		t.Errorf("the released binary: %v\n%s", err, out)
	}
	// Its SBOM names every module the binary links, as go version -m
	// lists them, at that version.
	sbom, err := os.ReadFile(filepath.Join(real.Out, "kubectl-netconf_migrator_v0.2.0_"+runtime.GOOS+"_"+runtime.GOARCH+".tar.gz.cdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components []struct{ Name, Version, PURL string }
	}
	if err := json.Unmarshal(sbom, &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, c := range doc.Components {
		have[c.Name+"@"+c.Version] = true
	}
	mods, err := exec.Command("go", "version", "-m", filepath.Join(dir, "kubectl-netconf_migrator")).Output()
	if err != nil {
		t.Fatal(err)
	}
	deps := 0
	for _, line := range strings.Split(string(mods), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || (f[0] != "dep" && f[0] != "=>") {
			continue
		}
		deps++
		if !have[f[1]+"@"+f[2]] {
			t.Errorf("the SBOM lacks %s %s, which the binary links", f[1], f[2])
		}
	}
	if deps < 20 || len(doc.Components) < deps {
		t.Errorf("go version -m lists %d modules, the SBOM %d components", deps, len(doc.Components))
	}
	zr, err := zip.OpenReader(filepath.Join(outs[0], "kubectl-netconf_migrator_v0.2.0_windows_amd64.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "LICENSE,kubectl-netconf_migrator.exe" {
		t.Errorf("windows archive holds %v", names)
	}

	// krew's validator, from the module proxy at the version krew-index uses.
	cmd := exec.Command("go", "run", "sigs.k8s.io/krew/cmd/validate-krew-manifest@v0.4.3", "-skip-install", "-manifest", filepath.Join(outs[0], "netconf-migrator.yaml"))
	cmd.Dir = t.TempDir() // outside this module: its go.mod must not decide krew's
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("validate-krew-manifest refused the manifest: %v\n%s", err, out)
	}
}

// TestTheReleaseBuildIsStatic: a released binary is built static for its
// platform (it runs in any container and on any distribution), without the
// builder's paths or VCS state (reproducible), stripped and stamped.
func TestTheReleaseBuildIsStatic(t *testing.T) {
	o := Options{Root: "/src", Version: "v0.2.0"}
	cmd := releaseBuild(o, "windows/arm64", "/out/kubectl-netconf_migrator.exe")
	if cmd.Dir != "/src" {
		t.Errorf("builds in %q, want the repository", cmd.Dir)
	}
	want := []string{"go", "build", "-trimpath", "-buildvcs=false", "-ldflags",
		"-s -w -X github.com/harvester/netconf-migrator/internal/version.Version=v0.2.0",
		"-o", "/out/kubectl-netconf_migrator.exe", "./cmd/netconf-migrator"}
	if !slices.Equal(cmd.Args, want) {
		t.Errorf("runs %q, want %q", cmd.Args, want)
	}
	// The last of a variable wins in a process's environment.
	env := map[string]string{}
	for _, kv := range cmd.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if env["CGO_ENABLED"] != "0" || env["GOOS"] != "windows" || env["GOARCH"] != "arm64" {
		t.Errorf("builds with CGO_ENABLED=%q GOOS=%q GOARCH=%q, want 0, windows, arm64", env["CGO_ENABLED"], env["GOOS"], env["GOARCH"])
	}
}
