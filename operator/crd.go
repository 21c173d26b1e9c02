package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/internal/logging"
)

// AnnotationCRDVersion records which version of the tool last applied the
// NADMigration CRD.
const AnnotationCRDVersion = "netconf-migrator.harvesterhci.io/version"

// CRDUpgrader keeps the served NADMigration CRD at the operator's own
// version. The chart upgrades the CRD it installed (a template), but one
// an earlier version's crds/ installed belongs to no release (Helm
// installs crds/ once and never changes them, and Harvester's
// helm-controller has Helm's semantics), nor does a kustomize install's
// between applies; without it those would stay on the old CRD. The
// elected replica applies the CRD it was built with (server-side
// apply, forcing the fields Helm or kubectl set) unless the served one was
// applied by a newer version: a rollback of the operator never takes
// fields away from objects a newer one wrote.
type CRDUpgrader struct {
	Client  client.Client
	Version string
	Log     logr.Logger
	// Manifest is the CRD this version serves: the one embedded in apis/
	// when empty (a test gives a later version's).
	Manifest []byte
}

// Start applies the CRD once, retrying transient errors for a minute; a
// CRD it may not change is reported, and the operator goes on. The report
// carries the last attempt's error at the default level: a timeout alone
// says nothing an administrator can act on.
func (u *CRDUpgrader) Start(ctx context.Context) error {
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: time.Second, Factor: 2, Steps: 6, Cap: 20 * time.Second}, func(ctx context.Context) (bool, error) {
		last = u.apply(ctx)
		if last != nil && (apierrors.IsForbidden(last) || apierrors.IsInvalid(last)) {
			return false, last
		}
		if last != nil {
			u.Log.V(logging.Debug).Info("Applying the NADMigration CRD failed; retrying", logging.KeyReason, last.Error())
		}
		return last == nil, nil
	})
	if err != nil && ctx.Err() == nil {
		if last != nil && !errors.Is(err, last) {
			err = fmt.Errorf("%w: %w", err, last)
		}
		u.Log.Error(err, "The NADMigration CRD was not upgraded to this version; NADMigrations keep the served schema")
	}
	return nil
}

func (u *CRDUpgrader) apply(ctx context.Context) error {
	want := &apiextensionsv1.CustomResourceDefinition{}
	manifest := u.Manifest
	if len(manifest) == 0 {
		manifest = v1alpha1.CRDManifest
	}
	if err := yaml.Unmarshal(manifest, want); err != nil {
		return fmt.Errorf("decoding the embedded NADMigration CRD: %w", err)
	}
	cur := &apiextensionsv1.CustomResourceDefinition{}
	err := u.Client.Get(ctx, client.ObjectKey{Name: want.Name}, cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading CustomResourceDefinition %s: %w", want.Name, err)
	}
	if err == nil && newer(cur.Annotations[AnnotationCRDVersion], u.Version) {
		u.Log.Info("Leaving the NADMigration CRD as a newer version applied it", "served", cur.Annotations[AnnotationCRDVersion], "version", u.Version)
		return nil
	}
	want.APIVersion, want.Kind = apiextensionsv1.SchemeGroupVersion.String(), "CustomResourceDefinition"
	if want.Annotations == nil {
		want.Annotations = map[string]string{}
	}
	want.Annotations[AnnotationCRDVersion] = u.Version
	if err := u.Client.Patch(ctx, want, client.Apply, client.FieldOwner("netconf-migrator-operator"), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying CustomResourceDefinition %s: %w", want.Name, err)
	}
	u.Log.Info("Applied the NADMigration CRD of this version", "version", u.Version)
	return nil
}

// newer says whether served names a later release than ours; a version
// that is not semantic (a development build) is never newer.
func newer(served, ours string) bool {
	s, err := version.ParseSemantic(served)
	if err != nil {
		return false
	}
	o, err := version.ParseSemantic(ours)
	if err != nil {
		return false
	}
	return s.GreaterThan(o)
}
