package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// PreflightError is a reason not to start, in one sentence. Transient is
// set when the API server kept failing for reasons a later run may not
// meet (5xx, timeouts, dropped connections) after the retries were spent.
type PreflightError struct {
	Msg       string
	Transient bool
}

func (e *PreflightError) Error() string { return e.Msg }

// PreflightScope is what a run will do, for Preflight to check.
type PreflightScope struct {
	// Namespace is the NADs' scope ("": every namespace).
	Namespace string
	// Writes: the run patches NADs (a server dry run is authorized as a
	// write; a client dry run reads only).
	Writes bool
	// Stores: a real run (no dry run), which holds the run's Lease and
	// writes backups.
	Stores bool
	// Replaces: the replacement path is on.
	Replaces bool
	// BackupNamespace holds the Lease, the backups and their signing key.
	BackupNamespace string
}

// Preflight checks, before anything is written, that the NAD CRD is
// installed and Established and that this identity may do what the run
// will do: list and get NADs in the scope, patch them when the run writes;
// create and delete them, and keep backups as Secrets in an existing
// backup namespace, when it replaces; take the run's Lease and read its
// signing key when it stores. A server dry run checks everything the real
// run needs but the Lease and the key, so it never promises what the run
// cannot do. Transient errors are retried for at most budget, as a NAD's
// writes are: one etcd leader change must not fail a Job that fails at
// once on exit code 2.
func Preflight(ctx context.Context, cfg *rest.Config, scope PreflightScope, budget time.Duration) error {
	namespace, writes, backupNamespace := scope.Namespace, scope.Writes, ""
	if scope.Replaces {
		backupNamespace = scope.BackupNamespace
	}
	b := DefaultBackoff
	b.Budget = budget
	call := func(op func() error) error {
		_, err := b.retry(ctx, op)
		return err
	}
	transient := func(err error) bool { return Classify(err) == Retry }
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return &PreflightError{Msg: fmt.Sprintf("Cannot build a client for %s: %v.", cfg.Host, err)}
	}
	var crd *apiextensionsv1.CustomResourceDefinition
	err = call(func() (err error) {
		crd, err = ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, nadv1.CRDName, metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return &PreflightError{Msg: fmt.Sprintf("The CustomResourceDefinition %s is not installed, so there are no NetworkAttachmentDefinitions to migrate (is Multus installed?).", nadv1.CRDName)}
	case apierrors.IsForbidden(err):
		return &PreflightError{Msg: fmt.Sprintf("This identity may not read the CustomResourceDefinition %s: %v.", nadv1.CRDName, apiMessage(err))}
	case err != nil:
		return &PreflightError{Msg: fmt.Sprintf("Cannot read the CustomResourceDefinition %s from %s: %v.", nadv1.CRDName, cfg.Host, err), Transient: transient(err)}
	}
	established := false
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			established = true
		}
	}
	if !established {
		return &PreflightError{Msg: fmt.Sprintf("The CustomResourceDefinition %s is not Established yet; try again once the API server serves it.", nadv1.CRDName)}
	}
	served := false
	for _, v := range crd.Spec.Versions {
		served = served || (v.Name == nadv1.GroupVersion.Version && v.Served)
	}
	if !served {
		return &PreflightError{Msg: fmt.Sprintf("The CustomResourceDefinition %s does not serve version %s.", nadv1.CRDName, nadv1.GroupVersion.Version)}
	}

	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return &PreflightError{Msg: fmt.Sprintf("Cannot build a client for %s: %v.", cfg.Host, err)}
	}
	allowed := func(ns, verb, group, resource string) (bool, error) {
		return allowedName(ctx, kube, call, transient, ns, verb, group, resource, "")
	}
	var denied []string
	verbs := []string{"list", "get"}
	if writes {
		verbs = append(verbs, "patch")
		if backupNamespace != "" {
			verbs = append(verbs, "create", "delete")
		}
	}
	for _, verb := range verbs {
		ok, err := allowed(namespace, verb, nadv1.GroupVersion.Group, nadv1.Resource)
		if err != nil {
			return err
		}
		if !ok {
			denied = append(denied, verb)
		}
	}
	if len(denied) > 0 {
		scope := "in all namespaces"
		if namespace != "" {
			scope = "in namespace " + namespace
		}
		msg := fmt.Sprintf("This identity may not %s NetworkAttachmentDefinitions %s; grant the netconf-migrator-job ClusterRole (config/job)", strings.Join(denied, " or "), scope)
		if slices.Contains(denied, "create") || slices.Contains(denied, "delete") {
			msg += ", or pass --recreate=never to only ever update NADs in place"
		}
		return &PreflightError{Msg: msg + "."}
	}
	type check struct{ verb, group, resource, name string }
	var checks []check
	if writes && backupNamespace != "" {
		for _, verb := range []string{"create", "get", "list", "update", "delete"} {
			checks = append(checks, check{verb, "", "secrets", ""})
		}
	}
	if scope.Stores {
		checks = append(checks, check{"create", "coordination.k8s.io", "leases", ""}, check{"get", "coordination.k8s.io", "leases", runlock.LeaseName},
			check{"update", "coordination.k8s.io", "leases", runlock.LeaseName})
		if scope.Replaces {
			checks = append(checks, check{"create", "", "secrets", ""}, check{"get", "", "secrets", replace.KeySecretName})
		}
	}
	for _, c := range checks {
		ok, err := allowedName(ctx, kube, call, transient, scope.BackupNamespace, c.verb, c.group, c.resource, c.name)
		if err != nil {
			return err
		}
		if !ok {
			what := c.resource
			if c.name != "" {
				what += " named " + c.name
			}
			return &PreflightError{Msg: fmt.Sprintf("This identity may not %s %s in namespace %s, where the run keeps its Lease, the backups of the NADs it replaces and their signing key;"+
				" grant the netconf-migrator-job Role (config/job), pass --backup-namespace, or --recreate=never.", c.verb, what, scope.BackupNamespace)}
		}
	}
	if (scope.Stores || backupNamespace != "") && writes {
		// A dry-run create shows the namespace exists and admission lets
		// us write there; SelfSubjectAccessReviews allow a namespace that
		// does not exist.
		meta := metav1.ObjectMeta{Namespace: scope.BackupNamespace, GenerateName: "netconf-migrator-preflight-"}
		dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
		probe := func() error {
			return call(func() error {
				var err error
				if backupNamespace != "" {
					_, err = kube.CoreV1().Secrets(scope.BackupNamespace).Create(ctx, &corev1.Secret{ObjectMeta: meta, Type: replace.JournalSecretType}, dry)
				} else {
					_, err = kube.CoordinationV1().Leases(scope.BackupNamespace).Create(ctx, &coordinationv1.Lease{ObjectMeta: meta}, dry)
				}
				return err
			})
		}
		err := probe()
		if apierrors.IsNotFound(err) {
			// Made where this identity may, as helm --create-namespace
			// does: by the real run (which then checks it may write
			// there); a dry run only checks that it may make it.
			err = createBackupNamespace(ctx, kube, call, transient, scope)
			if err == nil && scope.Stores {
				err = probe()
			}
		}
		switch {
		case errors.Is(err, errMayNotCreate):
			return &PreflightError{Msg: fmt.Sprintf("The namespace %s, where the run keeps its Lease and the backups of the NADs it replaces, does not exist, and this identity may not create it;"+
				" create it (kubectl create namespace %s) or pass --backup-namespace.", scope.BackupNamespace, scope.BackupNamespace)}
		case err != nil:
			return &PreflightError{Msg: fmt.Sprintf("Cannot write a backup in namespace %s: %v.", scope.BackupNamespace, apiMessage(err)), Transient: transient(err)}
		}
	}
	return nil
}

var errMayNotCreate = errors.New("may not create the namespace")

// createBackupNamespace makes the backup namespace for a real run (labelled
// as config/ labels it: restricted Pod security, nothing but the tool's
// Secrets), or, for a dry run, checks that the real run may. It returns
// errMayNotCreate when this identity may not.
func createBackupNamespace(ctx context.Context, kube kubernetes.Interface, call func(func() error) error, transient func(error) bool, scope PreflightScope) error {
	ok, err := allowedName(ctx, kube, call, transient, "", "create", "", "namespaces", "")
	if err != nil {
		return err
	}
	if !ok {
		return errMayNotCreate
	}
	if !scope.Stores {
		return nil
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scope.BackupNamespace, Labels: map[string]string{
		"app.kubernetes.io/name": "netconf-migrator", "app.kubernetes.io/component": "backups",
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	err = call(func() error {
		_, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: "netconf-migrator"})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if apierrors.IsForbidden(err) {
		return errMayNotCreate
	}
	return err
}

// allowedName asks the API server whether this identity may verb the
// resource (the named one, when name is set) in ns.
func allowedName(ctx context.Context, kube kubernetes.Interface, call func(func() error) error, transient func(error) bool, ns, verb, group, resource, name string) (bool, error) {
	ssar := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource, Name: name},
	}}
	var res *authorizationv1.SelfSubjectAccessReview
	err := call(func() (err error) {
		res, err = kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, ssar, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return false, &PreflightError{Msg: fmt.Sprintf("Cannot check this identity's permissions on %s: %v.", resource, apiMessage(err)), Transient: transient(err)}
	}
	return res.Status.Allowed, nil
}

func apiMessage(err error) string {
	if s, ok := err.(apierrors.APIStatus); ok {
		return s.Status().Message
	}
	return err.Error()
}
