package app

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// An operator that cannot reach the API server when it starts exits 3
// (stopped; its kubelet restarts it), saying so, not 2 (usage): nothing in
// its command line is wrong.
func TestTheOperatorSaysTheAPIServerIsUnreachable(t *testing.T) {
	kubeconfig := unreachableKubeconfig(t)
	var out, errOut bytes.Buffer
	code := Execute([]string{"operator", "--kubeconfig", kubeconfig, "--leader-election-namespace", "x",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, strings.NewReader(""), &out, &errOut)
	if code != ExitStopped || !strings.Contains(errOut.String(), "the API server could not be reached at start") {
		t.Errorf("exit %d, want %d naming the API server:\n%s", code, ExitStopped, errOut.String())
	}
}

// N4 of issue 35: a Lease records whole seconds, so --lease-duration 1900ms
// would let another run take the run Lease (read as 1s) while this one's
// fence still allows writes. Both entry points refuse it before
// connecting (the server named is unreachable: a duration let through
// would fail later, with another message and exit code), naming the flag.
// runlock's TestALeaseLastsWholeSeconds shows whole seconds are taken.
// A Lease longer than runlock.MaxDuration is refused too: a killed
// holder's would keep every other run out that long.
func TestALeaseDurationIsWholeSeconds(t *testing.T) {
	for _, cmd := range [][]string{
		{"migrate", "-n", "x"},
		{"operator", "--leader-election-namespace", "x", "--metrics-bind-address", "0", "--health-probe-bind-address", "0"},
	} {
		for d, why := range map[string]string{"1900ms": "is not a whole number of seconds", "500ms": "is not a whole number of seconds",
			"2.5s": "is not a whole number of seconds", "24h": "is longer than 5m0s"} {
			var out, errOut bytes.Buffer
			args := append(slices.Clone(cmd), "--lease-duration", d, "--kubeconfig", unreachableKubeconfig(t))
			code := Execute(args, strings.NewReader(""), &out, &errOut)
			if code != ExitUsage || !strings.Contains(errOut.String(), "--lease-duration: ") || !strings.Contains(errOut.String(), why) {
				t.Errorf("%s --lease-duration %s: exit %d, want %d refusing it (%s)\n%s", cmd[0], d, code, ExitUsage, why, errOut.String())
			}
		}
	}
}

// unreachableKubeconfig writes a kubeconfig naming a port nothing listens
// on (taken, then closed).
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+addr+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// A kubectl plugin takes kubectl's connection flags, without the basic-auth
// ones kubectl no longer offers (issue 36): a password on a command line
// lands in shell history, and no API server of a supported version takes
// it. Every command that connects shows --token and --as, and none shows
// --username or --password, nor accepts them.
func TestNoCommandOffersBasicAuth(t *testing.T) {
	root := NewRootCommand(IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	connecting := 0
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Flags().Lookup("token") != nil || c.InheritedFlags().Lookup("token") != nil {
			connecting++
			for _, name := range []string{"username", "password"} {
				if c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil {
					t.Errorf("%s offers --%s", c.CommandPath(), name)
				}
			}
			if c.Flags().Lookup("as") == nil && c.InheritedFlags().Lookup("as") == nil {
				t.Errorf("%s takes --token but not kubectl's --as", c.CommandPath())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if connecting < 5 {
		t.Errorf("%d commands take kubectl's connection flags; want migrate, rollback, operator, backups and its subcommands at least", connecting)
	}
	var out, errOut bytes.Buffer
	if code := Execute([]string{"migrate", "--username", "admin", "--password", "secret", "--kubeconfig", unreachableKubeconfig(t)}, strings.NewReader(""), &out, &errOut); code != ExitUsage || !strings.Contains(errOut.String(), "unknown flag: --username") {
		t.Errorf("migrate --username: exit %d, want %d (unknown flag)\n%s", code, ExitUsage, errOut.String())
	}
}

// chart-repo serves the chart the binary embeds, until its context ends.
func TestChartRepoServesTheEmbeddedChart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	root := NewRootCommand(IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	root.SetArgs([]string{"chart-repo", "--listen", addr})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var body []byte
	for range 100 {
		resp, err := http.Get("http://" + addr + "/index.yaml")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	version, _ := os.ReadFile(filepath.Join("..", "..", "..", "VERSION"))
	if !strings.Contains(string(body), "netconf-migrator-"+strings.TrimSpace(string(version))+".tgz") {
		t.Errorf("chart-repo's index.yaml:\n%s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("chart-repo after its context ended: %v", err)
	}
}
