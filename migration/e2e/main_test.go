// Package e2e runs `netconf-migrator migrate` and `rollback` against a real
// etcd and kube-apiserver: paging, resourceVersion conflicts, admission
// denials, RBAC and killed processes are what it proves.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard()) // client-go's leader election, in in-process runs
	// Webhook certificates are made for the Harvester stand-ins, which read
	// the kinds of harvester.CRDs.
	os.Exit(testenv.Main(m, testenv.Options{Webhooks: &envtest.WebhookInstallOptions{}, CRDs: harvester.CRDs(), Namespaces: []string{backupNamespace, earlierNamespace}}, &env))
}

// fastClient is an admin client without client-side rate limits, for
// seeding and checking.
func fastClient(t testing.TB) client.Client {
	t.Helper()
	c, err := env.UnlimitedClient()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seed creates NADs from 16 writers.
func seed(t testing.TB, nads []*nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	objs := make([]client.Object, len(nads))
	for i, n := range nads {
		objs[i] = n
	}
	if err := env.CreateMany(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
}

func newNAD(ns, name, config string, labels map[string]string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

// listAll returns every NAD in the namespaces, by namespace/name.
func listAll(t testing.TB, namespaces ...string) map[string]nadv1.NetworkAttachmentDefinition {
	t.Helper()
	out := map[string]nadv1.NetworkAttachmentDefinition{}
	c := fastClient(t)
	for _, ns := range namespaces {
		list := &nadv1.NetworkAttachmentDefinitionList{}
		if err := c.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, n := range list.Items {
			out[n.Namespace+"/"+n.Name] = n
		}
	}
	return out
}

type result struct {
	code        int
	out, errOut string
	report      *report.Report
	hasReport   bool
}

// itemsByName indexes the report's items by NAD name.
func (r result) itemsByName() map[string]report.Item {
	items := map[string]report.Item{}
	for _, it := range r.report.Items {
		items[it.Name] = it
	}
	return items
}

// runCLI runs the command in-process, as a user would, with the admin
// kubeconfig unless args name another, and reads its report.
func runCLI(t testing.TB, args ...string) result {
	t.Helper()
	reportPath := filepath.Join(t.TempDir(), "report.json")
	full := append([]string{}, args...)
	has := map[string]bool{}
	for _, a := range args {
		has[a] = true
	}
	if !has["--kubeconfig"] {
		full = append(full, "--kubeconfig", env.KubeconfigPath)
	}
	if !has["--termination-message-path"] {
		full = append(full, "--termination-message-path", "")
	}
	full = append(full, "--report", reportPath)
	var out, errOut bytes.Buffer
	code := app.Execute(full, nil, &out, &errOut)
	r := result{code: code, out: out.String(), errOut: errOut.String()}
	// A run that wrote no report (usage and preflight errors) leaves an
	// empty one, so count checks fail instead of panicking.
	r.report = report.New()
	if raw, err := os.ReadFile(reportPath); err == nil {
		r.hasReport = true
		if err := json.Unmarshal(raw, r.report); err != nil {
			t.Fatalf("decoding the report: %v", err)
		}
	}
	if testing.Verbose() {
		t.Logf("netconf-migrator %v: exit %d\n%s", args, code, errOut.String())
	}
	return r
}

// kubeconfigAs writes a kubeconfig that impersonates user (and groups) with
// the admin credentials, as `kubectl --as` does.
func kubeconfigAs(t testing.TB, user string, groups ...string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate, a.ImpersonateGroups = user, groups
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeconfigFor writes a kubeconfig that reaches the API server at host
// without credentials (through a proxy that adds them).
func kubeconfigFor(t testing.TB, host string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["proxy"] = &clientcmdapi.Cluster{Server: host}
	cfg.AuthInfos["none"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "none"}
	cfg.CurrentContext = "proxy"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
