// Command chart renders config/chart/netconf-migrator with its default
// values into a file, as `helm template` would: `make manifests` uses it,
// so rendering needs neither helm nor a cluster.
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
	flag.Parse()
	out, err := chartrender.Render(*dir, *ns, nil)
	if err == nil {
		err = chartrender.Lint(*dir, *ns, nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
