package migration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// PreflightError is a reason not to start, in one sentence. Transient is
// set when the API server kept failing for reasons a later run may not
// meet (5xx, timeouts, dropped connections) after the retries were spent.
type PreflightError struct {
	Msg       string
	Transient bool
}

func (e *PreflightError) Error() string { return e.Msg }

// Preflight checks, before anything is written, that the NAD CRD is
// installed and Established and that this identity may list and get NADs in
// the scope, and patch them when the run writes (a server dry run is
// authorized as a write; a client dry run reads only, so a read-only
// identity can see what a migration would do). With backupNamespace set
// (the recreate path is on) a writing run must also be allowed to create
// and delete NADs, and to keep backups as ConfigMaps there. Transient
// errors are retried for at most budget, as a NAD's writes are: one etcd
// leader change must not fail a Job that fails at once on exit code 2.
func Preflight(ctx context.Context, cfg *rest.Config, namespace string, writes bool, backupNamespace string, budget time.Duration) error {
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
	allowed := func(ns, verb, group, version, resource string) (bool, error) {
		ssar := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Version: version, Resource: resource},
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
	var denied []string
	verbs := []string{"list", "get"}
	if writes {
		verbs = append(verbs, "patch")
		if backupNamespace != "" {
			verbs = append(verbs, "create", "delete")
		}
	}
	for _, verb := range verbs {
		ok, err := allowed(namespace, verb, nadv1.GroupVersion.Group, nadv1.GroupVersion.Version, nadv1.Resource)
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
	if writes && backupNamespace != "" {
		for _, verb := range []string{"create", "list", "delete"} {
			ok, err := allowed(backupNamespace, verb, "", "v1", "configmaps")
			if err != nil {
				return err
			}
			if !ok {
				return &PreflightError{Msg: fmt.Sprintf("This identity may not %s ConfigMaps in namespace %s, where backups of the NADs it replaces are kept;"+
					" grant the netconf-migrator-job Role (config/job), pass --backup-namespace, or --recreate=never.", verb, backupNamespace)}
			}
		}
	}
	return nil
}

func apiMessage(err error) string {
	if s, ok := err.(apierrors.APIStatus); ok {
		return s.Status().Message
	}
	return err.Error()
}
