package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/harvester"
)

// TestAReplacementWhoseDeleteAnswerWasLost: beside Harvester v1.6 and its
// controllers, the first delete of each nested NAD lands but is answered
// 504 with Retry-After, so client-go sends it again and hands back the
// resend's answer: 409 while the NAD is terminating, 404 once it is gone.
// Before the replacement counted the sends, it took that answer for "not
// deleted" (or "deleted by someone else") and dropped the backup, and the
// NAD was lost. Every nested NAD must end replaced, flat, with no backup
// left.
func TestAReplacementWhoseDeleteAnswerWasLost(t *testing.T) {
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "lost-delete")
	var nads []*nadv1.NetworkAttachmentDefinition
	for i := range 6 {
		name := "nad-" + string(rune('a'+i))
		nads = append(nads, newNAD(ns, name, nestedConfig(name), harvesterLabels()))
	}
	h.Pause(func() { seed(t, nads) })
	before := listAll(t, ns)

	up := upstream(t)
	var mu sync.Mutex
	deletes := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix := "/apis/k8s.cni.cncf.io/v1/namespaces/" + ns + "/network-attachment-definitions/"
		if r.Method != http.MethodDelete || !strings.HasPrefix(r.URL.Path, prefix) || r.URL.Query().Get("dryRun") != "" {
			up.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		name := strings.TrimPrefix(r.URL.Path, prefix)
		deletes[name]++
		first := deletes[name] == 1
		mu.Unlock()
		if first {
			faultTimeoutAfter.serve(w, r, up)
			return
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	r := runCLI(t, "migrate", "-n", ns, "--kubeconfig", kubeconfigFor(t, srv.URL), "--termination-message-path", "")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.errOut)
	}
	after := listAll(t, ns)
	for ref, b := range before {
		a, ok := after[ref]
		switch {
		case !ok:
			t.Errorf("%s is lost", ref)
		case netconf.Normalize([]byte(a.Spec.Config)).Form != netconf.FormFlat || a.UID == b.UID:
			t.Errorf("%s was not replaced: uid %s, %s", ref, a.UID, a.Spec.Config)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range nads {
		if deletes[n.Name] < 2 {
			t.Errorf("%s: %d deletes sent, want the first and client-go's resend", n.Name, deletes[n.Name])
		}
	}
	checkNoBackups(t)
}
