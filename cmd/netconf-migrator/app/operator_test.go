package app

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An operator that cannot reach the API server when it starts exits 3
// (stopped; its kubelet restarts it), saying so, not 2 (usage): nothing in
// its command line is wrong.
func TestTheOperatorSaysTheAPIServerIsUnreachable(t *testing.T) {
	// A port nothing listens on: taken, then closed.
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
	var out, errOut bytes.Buffer
	code := Execute([]string{"operator", "--kubeconfig", kubeconfig, "--leader-election-namespace", "x",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, strings.NewReader(""), &out, &errOut)
	if code != ExitStopped || !strings.Contains(errOut.String(), "the API server could not be reached at start") {
		t.Errorf("exit %d, want %d naming the API server:\n%s", code, ExitStopped, errOut.String())
	}
}
