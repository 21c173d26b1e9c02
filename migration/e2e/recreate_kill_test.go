package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
)

// killProxy forwards to the API server and SIGKILLs the migrate process
// right after the API server has carried out the first request that
// matches, before the process sees the answer: the process dies with that
// step done and the next one not started.
type killProxy struct {
	upstream *httputil.ReverseProxy
	match    func(*http.Request) bool

	mu     sync.Mutex
	proc   *os.Process
	killed bool
}

func newKillProxy(t *testing.T, match func(*http.Request) bool) (*killProxy, *httptest.Server) {
	t.Helper()
	p := &killProxy{upstream: upstream(t), match: match}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

// start starts cmd as the process the proxy kills.
func (p *killProxy) start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.proc = cmd.Process
}

func (p *killProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	kill := !p.killed && p.match(r)
	p.killed = p.killed || kill
	p.mu.Unlock()
	if !kill {
		p.upstream.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	p.upstream.ServeHTTP(rec, r)
	p.mu.Lock()
	_ = p.proc.Signal(syscall.SIGKILL)
	p.mu.Unlock()
	dropConnection(w)
}

// TestRecreateKilledAtEachStep SIGKILLs migrate between the steps of a
// replacement beside Harvester v1.6 (which refuses to flatten in place), then
// runs it again: no NAD is missing or duplicated, every one ends flat, no
// backup is left, and the second run's report accounts for every NAD.
func TestRecreateKilledAtEachStep(t *testing.T) {
	ensureBackupNamespace(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	bin := buildBinary(t)
	h := harvester.StartT(t, env, harvester.V16)
	isNAD := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/network-attachment-definitions") }
	// A backup is a Secret of the backup namespace named after the NAD (the
	// signing key, created on first use, is one too).
	isBackup := func(r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/namespaces/"+backupNamespace+"/secrets") || r.URL.Query().Get("dryRun") != "" {
			return false
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		return bytes.Contains(body, []byte("netconf-migrator-backup-"))
	}
	for _, step := range []struct {
		name  string
		match func(*http.Request) bool
		// what the kill leaves: NADs missing, backups left
		missing, backups int
	}{
		{"after the dry-run create", func(r *http.Request) bool {
			return r.Method == http.MethodPost && isNAD(r) && r.URL.Query().Get("dryRun") != ""
		}, 0, 0},
		{"after the backup", func(r *http.Request) bool {
			return r.Method == http.MethodPost && isBackup(r)
		}, 0, 1},
		{"after the delete", func(r *http.Request) bool { return r.Method == http.MethodDelete && isNAD(r) }, 1, 1},
		{"after the backup records the delete", func(r *http.Request) bool {
			return r.Method == http.MethodPut && isBackup(r)
		}, 1, 1},
		{"after the create", func(r *http.Request) bool {
			return r.Method == http.MethodPost && isNAD(r) && r.URL.Query().Get("dryRun") == ""
		}, 0, 1},
	} {
		t.Run(step.name, func(t *testing.T) {
			ns := h.Namespace(t, "recreate-killed")
			var nads []*nadv1.NetworkAttachmentDefinition
			for _, name := range []string{"a", "b", "c"} {
				nads = append(nads, newNAD(ns, name, nestedConfig(name), harvesterLabels()))
			}
			seed(t, nads)
			before := listAll(t, ns)

			p, srv := newKillProxy(t, step.match)
			// One replacement at a time, so the kill lands between two
			// steps of one replacement and the others have not started.
			// A 6 s Lease: at 2 s a loaded machine held a renewal back past the
			// fence (0.5 s before the end), and the run stopped itself (exit 3)
			// before the step the proxy waits for.
			cmd := exec.Command(bin, "migrate", "-n", ns, "--concurrency", "1", "--replace-concurrency", "1", "--lease-duration", "6s", "--kubeconfig", kubeconfigFor(t, srv.URL), "--termination-message-path", "")
			p.start(t, cmd)
			_ = cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				t.Fatalf("the run was not killed %s: %v", step.name, cmd.ProcessState)
			}

			var cms corev1.SecretList
			if err := env.Client.List(context.Background(), &cms, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
				t.Fatal(err)
			}
			// Deleted means gone or terminating: Harvester's controllers
			// remove their finalizers a moment after the delete.
			stored := 0
			for _, n := range listAll(t, ns) {
				if n.DeletionTimestamp == nil {
					stored++
				}
			}
			if missing := len(before) - stored; missing != step.missing || len(cms.Items) != step.backups {
				t.Fatalf("killed %s: %d NADs missing and %d backups, want %d and %d", step.name, missing, len(cms.Items), step.missing, step.backups)
			}

			r := runCLI(t, "migrate", "-n", ns)
			if r.code != 0 {
				t.Fatalf("the run after the kill: exit %d\n%s", r.code, r.errOut)
			}
			after := listAll(t, ns)
			if len(after) != len(before) {
				t.Errorf("%d NADs after, %d before: %v", len(after), len(before), after)
			}
			for ref, b := range before {
				a, ok := after[ref]
				if !ok {
					t.Errorf("%s is missing", ref)
					continue
				}
				if f := netconf.Normalize([]byte(a.Spec.Config)).Form; f != netconf.FormFlat || a.Annotations[nadv1.AnnotationOriginalConfig] != b.Spec.Config {
					t.Errorf("%s: %s %s %v", ref, f, a.Spec.Config, a.Annotations)
				}
			}
			if r.report.Summary.Total != len(before) {
				t.Errorf("the second run counted %d NADs, want %d", r.report.Summary.Total, len(before))
			}
			if n := r.report.Summary.Actions[report.ActionNormalized] + r.report.Summary.Actions[report.ActionUnchanged]; n != len(before) {
				t.Errorf("the second run: %v", r.report.Summary.Actions)
			}
			checkNoBackups(t)
		})
	}
}
