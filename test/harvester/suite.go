package harvester

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// ForEachRelease runs f once per release of Releases, as subtests named
// after the release and its tag, each with that release's stand-ins
// registered for the subtest's lifetime.
func ForEachRelease(t *testing.T, env *testenv.Env, f func(t *testing.T, s *StandIns)) {
	t.Helper()
	for _, r := range Releases {
		t.Run(fmt.Sprintf("%s (network-controller-harvester %s)", r, r.Tag()), func(t *testing.T) {
			s := StartT(t, env, r)
			f(t, s)
		})
	}
}

// StartT starts the release's stand-ins until the test ends.
func StartT(t testing.TB, env *testenv.Env, r Release) *StandIns {
	t.Helper()
	ctx := context.Background()
	s, err := Start(ctx, env, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Remove(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Namespace creates a namespace the stand-ins judge, named base-<release>
// so each release's run starts empty (harvester-system keeps its name:
// Harvester's rules look for it), and deletes its NADs when the test ends.
func (s *StandIns) Namespace(t testing.TB, base string) string {
	t.Helper()
	ctx := context.Background()
	ns := base
	if base != SystemNamespace {
		ns = base + "-" + strings.ReplaceAll(strings.TrimPrefix(string(s.Release), "v"), ".", "-")
	}
	if err := s.env.CreateNamespace(ctx, ns, map[string]string{NamespaceLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Clear(t, ns) })
	return ns
}

// Clear deletes every NAD, VM and VMI of a namespace with the stand-ins
// paused (Harvester would refuse deleting some of them).
func (s *StandIns) Clear(t testing.TB, ns string) {
	t.Helper()
	ctx := context.Background()
	c := s.env.Client
	s.Pause(func() {
		for _, kind := range []string{"VirtualMachineInstance", "VirtualMachine"} {
			u := &unstructured.Unstructured{}
			u.SetAPIVersion("kubevirt.io/v1")
			u.SetKind(kind)
			if err := c.DeleteAllOf(ctx, u, client.InNamespace(ns)); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
		}
		// At 15,000 NADs the collection delete outlives the request's
		// timeout while the API server goes on with it: not a failure of
		// the test (a failed benchmark prints no figures), and the
		// finalizers are stripped next either way.
		if err := c.DeleteAllOf(ctx, &nadv1.NetworkAttachmentDefinition{}, client.InNamespace(ns)); apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) {
			t.Logf("deleting the NADs of %s: %v; stripping their finalizers", ns, err)
		} else if err != nil {
			t.Error(err)
		}
		// A test may have held the controllers' cleanup: the next test
		// starts from an empty namespace.
		if err := StripFinalizers(ctx, c, ns); err != nil {
			t.Error(err)
		}
	})
	if s.Controllers != nil {
		s.Controllers.SetDown(false)
		s.Controllers.SetCleanup(nil)
	}
}

// Create creates objects (ClusterNetworks, VMs, VMIs, Settings),
// tolerating ones that exist.
func Create(t testing.TB, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %s %s: %v", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}
}

// Settle waits until the release's controllers are done with every NAD of
// the namespaces the stand-ins judge, as on a running cluster before anyone
// migrates: each NAD whose config they can decode carries the release's
// finalizers (a double-encoded one they can never write: every release's
// webhooks refuse the update), and no NAD changed for a while.
func (s *StandIns) Settle(t testing.TB) {
	t.Helper()
	if err := s.settle(context.Background()); err != nil {
		t.Fatalf("waiting for Harvester %s's controllers: %v", s.Release, err)
	}
}

func (s *StandIns) settle(ctx context.Context) error {
	if s.Controllers == nil {
		return nil
	}
	want := s.Release.Finalizers()
	last, waitingOn := "", ""
	err := wait.PollUntilContextTimeout(ctx, 150*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		nss := &corev1.NamespaceList{}
		if err := s.env.Client.List(ctx, nss, client.MatchingLabels{NamespaceLabel: "true"}); err != nil {
			return false, err
		}
		var state strings.Builder
		for _, ns := range nss.Items {
			list := &nadv1.NetworkAttachmentDefinitionList{}
			if err := s.env.Client.List(ctx, list, client.InNamespace(ns.Name)); err != nil {
				return false, err
			}
			for _, n := range list.Items {
				state.WriteString(n.Namespace + "/" + n.Name + "@" + n.ResourceVersion + " ")
				conf, err := decodeNetConf(n.Spec.Config, true)
				if err != nil || n.DeletionTimestamp != nil {
					continue
				}
				if s.Release.AtLeast(V17) && conf.Type != cniTypeKubeOVN {
					// From v1.7 the mutator refuses every update of a NAD
					// whose network it cannot tell (a bridge name that is
					// not valid, as a truncated config's; a type other than
					// bridge), the controller's finalizers included: such a
					// NAD never gets them.
					if _, err := setNetworkInfoToLabels(conf, map[string]string{}); err != nil {
						continue
					}
				}
				if m := missingFinalizers(&n, want); len(m) > 0 {
					last, waitingOn = "", fmt.Sprintf("%s/%s lacks finalizers %v", n.Namespace, n.Name, m)
					return false, nil
				}
			}
		}
		quiet := state.String() == last
		last, waitingOn = state.String(), "NADs still changing"
		return quiet, nil
	})
	if err != nil && waitingOn != "" {
		return fmt.Errorf("%w (last: %s)", err, waitingOn)
	}
	return err
}
