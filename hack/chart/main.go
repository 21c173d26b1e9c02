// Command chart lints and renders config/chart/netconf-migrator as `helm
// lint` and `helm template --include-crds` would (`make manifests`, and the
// suites that install the chart), and for a release packages it and pushes
// it to an OCI registry as `helm package` and `helm push` do: neither helm
// nor a cluster is needed. It lives in the tooling module so that the
// product's go.mod lists no Helm or registry client.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/hack/chartrender"
)

func main() {
	dir := flag.String("chart", "config/chart/netconf-migrator", "chart directory")
	ns := flag.String("namespace", "netconf-migrator-system", "release namespace")
	valuesFile := flag.String("values", "", "a YAML or JSON file of values over the chart's defaults")
	kubeconfig := flag.String("kubeconfig", "", "render as an install into this cluster does: Helm's lookup reads it")
	pkg := flag.String("package", "", "write the packaged chart (NAME-VERSION.tgz) into this directory instead of rendering it")
	push := flag.String("push", "", "with -package: also push it to this OCI repository (oci://ghcr.io/harvester/charts), with the Docker config's credentials")
	flag.Parse()
	if err := run(*dir, *ns, *valuesFile, *kubeconfig, *pkg, *push); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(dir, ns, valuesFile, kubeconfig, pkg, push string) error {
	var values map[string]any
	if valuesFile != "" {
		raw, err := os.ReadFile(valuesFile)
		if err != nil {
			return fmt.Errorf("reading the values: %w", err)
		}
		if err := yaml.Unmarshal(raw, &values); err != nil {
			return fmt.Errorf("reading the values %s: %w", valuesFile, err)
		}
	}
	if err := chartrender.Lint(dir, ns, values); err != nil {
		return err
	}
	if pkg == "" {
		var out []byte
		var err error
		if kubeconfig != "" {
			cfg, cerr := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if cerr != nil {
				return fmt.Errorf("reading the kubeconfig: %w", cerr)
			}
			out, err = chartrender.RenderAgainst(cfg, dir, ns, values)
		} else {
			out, err = chartrender.Render(dir, ns, values)
		}
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(out)
		return err
	}
	path, err := chartrender.Package(dir, pkg)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "chart: packaged", path)
	if push == "" {
		return nil
	}
	ref, err := chartrender.Push(path, push)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "chart: pushed", ref)
	// What the release signs: the chart by digest, never a tag.
	tagged, digest, _ := strings.Cut(ref, "@")
	tag, err := name.NewTag(tagged)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(pkg, "digest"), []byte(tag.Context().Digest(digest).String()+"\n"), 0o644)
}
