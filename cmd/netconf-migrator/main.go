// Command netconf-migrator normalizes CNI NetConf payloads in Kubernetes
// NetworkAttachmentDefinitions: as a mutating webhook, as a one-shot migration
// of stored objects, and offline on manifest files.
package main

import (
	"os"

	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
)

func main() {
	os.Exit(app.ExecuteIO(os.Args[1:], app.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, OwnsProcess: true}))
}
