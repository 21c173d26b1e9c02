// Command chart renders config/chart/netconf-migrator with its default
// values into a file, as `helm template` would (`make manifests`), and for
// a release packages it and pushes it to an OCI registry as `helm package`
// and `helm push` do: neither helm nor a cluster is needed.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/harvester/netconf-migrator/internal/chartrender"
)

func main() {
	dir := flag.String("chart", "config/chart/netconf-migrator", "chart directory")
	ns := flag.String("namespace", "netconf-migrator-system", "release namespace")
	pkg := flag.String("package", "", "write the packaged chart (NAME-VERSION.tgz) into this directory instead of rendering it")
	push := flag.String("push", "", "with -package: also push it to this OCI repository (oci://ghcr.io/harvester/charts), with the Docker config's credentials")
	flag.Parse()
	if err := run(*dir, *ns, *pkg, *push); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(dir, ns, pkg, push string) error {
	if err := chartrender.Lint(dir, ns, nil); err != nil {
		return err
	}
	if pkg == "" {
		out, err := chartrender.Render(dir, ns, nil)
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
	return nil
}
