package e2e

import (
	"bytes"
	"context"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// kustomize builds a config/ directory with kubectl's kustomize.
func kustomize(t testing.TB, dir string) []byte {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command("kubectl", "kustomize", filepath.Join(root, "config", dir))
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize config/%s: %v\n%s", dir, err, errOut.String())
	}
	return out.Bytes()
}

// TestManifestsServerDryRun applies every kustomization in config/ to the API
// server with server-side dry-run: schemas, defaulting and admission all see
// them, nothing is stored.
func TestManifestsServerDryRun(t *testing.T) {
	ctx := context.Background()
	if err := env.CreateNamespace(ctx, ownNamespace, nil); err != nil {
		t.Fatal(err)
	}
	// cert-manager is not part of the test control plane; its two kinds are
	// registered schemaless so the rest of the overlay is checked for real.
	for _, kind := range []string{"Certificate", "Issuer"} {
		installSchemaless(t, "cert-manager.io", kind)
	}
	for _, dir := range []string{"crd", "default", "cert-manager", "job", "warn-flat"} {
		t.Run(dir, func(t *testing.T) {
			out, errOut, err := env.Kubectl(ctx, kustomize(t, dir), "apply", "--dry-run=server", "-f", "-")
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server on config/%s: %v\n%s%s", dir, err, out, errOut)
			}
		})
	}

	t.Run("warn-flat drops the matchConditions and passes --warn-flat", func(t *testing.T) {
		for dir, want := range map[string]bool{"default": true, "cert-manager": true, "warn-flat": false} {
			out := string(kustomize(t, dir))
			// The webhook configuration's, not the backup policy's.
			if got := strings.Contains(out, "matchConditions:\n  - expression: has(object.spec) && has(object.spec.config)"); got != want {
				t.Errorf("config/%s has matchConditions: %v, want %v", dir, got, want)
			}
			if got := strings.Contains(out, "- --warn-flat"); got == want {
				t.Errorf("config/%s passes --warn-flat: %v, want %v", dir, got, !want)
			}
		}
	})

	t.Run("the operator's Pod waits out its shutdown grace: a replacement under way at SIGTERM finishes", func(t *testing.T) {
		op := deployments(t, "default")["netconf-migrator-operator"]
		if len(op.Spec.Template.Spec.Containers) == 0 {
			t.Fatal("config/default has no operator Deployment")
		}
		budget := migration.DefaultReplaceBudget
		for _, a := range op.Spec.Template.Spec.Containers[0].Args {
			if v, ok := strings.CutPrefix(a, "--replace-budget="); ok {
				d, err := time.ParseDuration(v)
				if err != nil {
					t.Fatal(err)
				}
				budget = d
			}
		}
		grace := time.Duration(*op.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if need := operator.ShutdownGrace(budget); grace <= need {
			t.Errorf("terminationGracePeriodSeconds is %s; the operator waits up to %s for a replacement (budget %s) before it exits, and the kubelet would kill it first", grace, need, budget)
		}
	})

	t.Run("the webhook's and the operator's Pods pass the restricted Pod Security Standard", func(t *testing.T) {
		deps := deployments(t, "default")
		dep, op := deps["netconf-migrator-webhook"], deps["netconf-migrator-operator"]
		if dep.Name == "" || op.Name == "" {
			t.Fatalf("config/default lacks the webhook's or the operator's Deployment: %v", slices.Collect(maps.Keys(deps)))
		}
		if *dep.Spec.Replicas != 2 {
			t.Errorf("replicas = %d, want 2", *dep.Spec.Replicas)
		}
		if sa := op.Spec.Template.Spec.ServiceAccountName; sa == dep.Spec.Template.Spec.ServiceAccountName {
			t.Errorf("the operator runs as the webhook's ServiceAccount %s", sa)
		}
		const ns = "pss-restricted"
		if err := env.CreateNamespace(ctx, ns, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}); err != nil {
			t.Fatal(err)
		}
		var pod *corev1.Pod
		for _, d := range []appsv1.Deployment{dep, op} {
			if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: d.Spec.Template.Spec.ServiceAccountName}}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: d.Name}, Spec: d.Spec.Template.Spec}
			if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
				t.Fatalf("the restricted Pod Security Standard refuses the Pod of %s: %v", d.Name, err)
			}
			if pod == nil {
				pod = p
			}
		}
		var job batchv1.Job
		for _, doc := range strings.Split(string(kustomize(t, "job")), "\n---\n") {
			if strings.Contains(doc, "kind: Job\n") {
				if err := yaml.UnmarshalStrict([]byte(doc), &job); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: job.Spec.Template.Spec.ServiceAccountName}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		jobPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "migrate"}, Spec: job.Spec.Template.Spec}
		if err := env.Client.Create(ctx, jobPod, client.DryRunAll); err != nil {
			t.Fatalf("the restricted Pod Security Standard refuses the migration Job's Pod: %v", err)
		}
		// And the check can fail: the same Pod with privilege escalation.
		bad := pod.DeepCopy()
		bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
		if err := env.Client.Create(ctx, bad, client.DryRunAll); err == nil {
			t.Fatal("Pod Security admission is not enforcing in the test control plane")
		}
	})
}

func installSchemaless(t testing.TB, group, kind string) {
	t.Helper()
	plural := strings.ToLower(kind) + "s"
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind)},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr.To(true),
				}},
			}},
		},
	}
	if err := env.Client.Create(context.Background(), crd); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := testenv.WaitEstablished(context.Background(), env.Client, crd.Name); err != nil {
		t.Fatal(err)
	}
}

// deployments returns the Deployments of config/<dir>, by name.
func deployments(t *testing.T, dir string) map[string]appsv1.Deployment {
	t.Helper()
	out := map[string]appsv1.Deployment{}
	for _, doc := range strings.Split(string(kustomize(t, dir)), "\n---\n") {
		if strings.Contains(doc, "kind: Deployment\n") {
			var dep appsv1.Deployment
			if err := yaml.UnmarshalStrict([]byte(doc), &dep); err != nil {
				t.Fatal(err)
			}
			out[dep.Name] = dep
		}
	}
	return out
}
