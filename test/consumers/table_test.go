package consumers

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/consumers.md from this run's results")

type consumer string

const (
	consumerMultus      consumer = "NAD client v1.7.7 + libcni (load)"
	consumerBridge      consumer = "bridge plugin (ADD in netns)"
	consumerWhereabouts consumer = "Whereabouts (ADD, DEL)"
	consumerHarvester   consumer = "Harvester validator (CREATE)"
)

type phase string

const (
	before phase = "before"
	after  phase = "after"
)

var (
	consumers = []consumer{consumerMultus, consumerBridge, consumerWhereabouts, consumerHarvester}
	forms     = []netconf.Form{netconf.FormFlat, netconf.FormConflist, netconf.FormNested, netconf.FormDoubleEncoded, netconf.FormTruncated}

	resultsMu sync.Mutex
	// results counts outcomes per cell, filled by the tests as they run.
	results = map[string]map[string]int{}
)

func cell(c consumer, f netconf.Form, p phase) string {
	return string(c) + "|" + string(f) + "|" + string(p)
}

// record notes an outcome a test has just checked, for the table in docs/consumers.md.
func record(t *testing.T, c consumer, f netconf.Form, p phase, outcome string) {
	t.Helper()
	resultsMu.Lock()
	defer resultsMu.Unlock()
	k := cell(c, f, p)
	if results[k] == nil {
		results[k] = map[string]int{}
	}
	results[k][outcome]++
}

// table renders the results: a row per form, before and after
// normalization for each consumer. A flat config is left as it is, so its
// "before" is its "after".
func table() string {
	var b strings.Builder
	b.WriteString("| form |")
	for _, c := range consumers {
		fmt.Fprintf(&b, " %s before | after |", c)
	}
	b.WriteString("\n|---|")
	for range consumers {
		b.WriteString("---|---|")
	}
	b.WriteString("\n")
	for _, f := range forms {
		fmt.Fprintf(&b, "| %s |", f)
		for _, c := range consumers {
			for _, p := range []phase{before, after} {
				fmt.Fprintf(&b, " %s |", outcomes(c, f, p))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func outcomes(c consumer, f netconf.Form, p phase) string {
	rs := results[cell(c, f, p)]
	if p == before && (f == netconf.FormFlat || f == netconf.FormConflist) && len(rs) == 0 {
		return "unchanged"
	}
	if len(rs) == 0 {
		return "-"
	}
	var parts []string
	for o, n := range rs {
		parts = append(parts, fmt.Sprintf("%s (%d)", o, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

const tableBegin, tableEnd = "<!-- consumers table: begin -->", "<!-- consumers table: end -->"

// checkTable compares this run's table with testdata/consumers.md and the
// copy in docs/consumers.md. Only a full, passing, unskipped run writes or checks it.
func checkTable() error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	got := table()
	golden := filepath.Join(root, "test", "consumers", "testdata", "consumers.md")
	readmePath := filepath.Join(root, "docs", "consumers.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	i, j := bytes.Index(readme, []byte(tableBegin)), bytes.Index(readme, []byte(tableEnd))
	if i < 0 || j < i {
		return fmt.Errorf("docs/consumers.md has no %s ... %s section", tableBegin, tableEnd)
	}
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			return err
		}
		readme = append(append(append([]byte{}, readme[:i+len(tableBegin)]...), "\n"+got...), readme[j:]...)
		return os.WriteFile(readmePath, readme, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		return err
	}
	if string(want) != got {
		return fmt.Errorf("the consumers' results changed; run go test ./test/consumers -update and review:\n--- testdata/consumers.md\n%s\n--- this run\n%s", want, got)
	}
	if !bytes.Equal(bytes.TrimSpace(readme[i+len(tableBegin):j]), bytes.TrimSpace(want)) {
		return fmt.Errorf("docs/consumers.md's consumers table differs from testdata/consumers.md; run go test ./test/consumers -update")
	}
	return nil
}
