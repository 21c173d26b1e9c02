package app

// The preflight of migrate and rollback: before a run starts, what it will
// need from the cluster (the NAD CRD, this identity's rights, the backup
// namespace), said in one sentence when it is missing: the CLI's and the
// Job's advice, kept out of the engine, which it asks how to retry and
// classify the API server's answers.

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
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// preflightError is a reason not to start, in one sentence. Transient is
// set when the API server kept failing for reasons a later run may not
// meet (5xx, timeouts, dropped connections) after the retries were spent.
type preflightError struct {
	Msg       string
	Transient bool
}

func (e *preflightError) Error() string { return e.Msg }

// preflightScope is what a run will do, for preflight to check.
type preflightScope struct {
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

// preflight verifies, before anything is written, that the NAD CRD is
// installed and Established and that this identity may do what the run
// will do: list and get NADs in the scope, patch them when the run writes;
// create and delete them, and keep backups as Secrets in the backup
// namespace, when it replaces; take the run's Lease there. A real run makes
// a missing backup namespace where it may. A dry run starts whenever it
// may send what it sends itself, and returns what the real run would need
// that this identity lacks (rights, the backup namespace), for the report
// to name beside the NADs that need it: a dry run never promises what the
// real run cannot do. Transient errors are retried for at most budget, as
// a NAD's writes are: one etcd leader change must not fail a Job that
// fails at once on exit code 2.
func preflight(ctx context.Context, cfg *rest.Config, scope preflightScope, budget time.Duration) ([]report.Need, error) {
	namespace, writes := scope.Namespace, scope.Writes
	b := migration.DefaultBackoff
	b.Budget = budget
	call := func(op func() error) error { return b.Retry(ctx, op) }
	transient := func(err error) bool { return migration.Classify(err) == migration.Retry }
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return nil, &preflightError{Msg: fmt.Sprintf("Cannot build a client for %s: %v.", cfg.Host, err)}
	}
	var crd *apiextensionsv1.CustomResourceDefinition
	err = call(func() (err error) {
		crd, err = ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, nadv1.CRDName, metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		return nil, &preflightError{Msg: fmt.Sprintf("The CustomResourceDefinition %s is not installed, so there are no NetworkAttachmentDefinitions to migrate (is Multus installed?).", nadv1.CRDName)}
	case apierrors.IsForbidden(err):
		return nil, &preflightError{Msg: fmt.Sprintf("This identity may not read the CustomResourceDefinition %s: %v.", nadv1.CRDName, apiMessage(err))}
	case err != nil:
		return nil, &preflightError{Msg: fmt.Sprintf("Cannot read the CustomResourceDefinition %s from %s: %v.", nadv1.CRDName, cfg.Host, err), Transient: transient(err)}
	}
	established := false
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			established = true
		}
	}
	if !established {
		return nil, &preflightError{Msg: fmt.Sprintf("The CustomResourceDefinition %s is not Established yet; try again once the API server serves it.", nadv1.CRDName)}
	}
	served := false
	for _, v := range crd.Spec.Versions {
		served = served || (v.Name == nadv1.GroupVersion.Version && v.Served)
	}
	if !served {
		return nil, &preflightError{Msg: fmt.Sprintf("The CustomResourceDefinition %s does not serve version %s.", nadv1.CRDName, nadv1.GroupVersion.Version)}
	}

	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, &preflightError{Msg: fmt.Sprintf("Cannot build a client for %s: %v.", cfg.Host, err)}
	}
	allowed := func(ns, verb, group, resource, name string) (bool, error) {
		return allowedName(ctx, kube, call, transient, ns, verb, group, resource, name)
	}
	// What the run itself sends must be allowed; what only the real run
	// sends is, for a dry run, a need it reports beside the NADs that need
	// it (the first command a person runs shows what to grant).
	dry := !scope.Stores
	var needs []report.Need
	scopeWords := "in all namespaces"
	if namespace != "" {
		scopeWords = "in namespace " + namespace
	}
	grant := "grant the netconf-migrator-job ClusterRole (config/job)"
	var denied []string
	var deniedRewrite, deniedReplace []string
	for _, v := range []struct {
		verb    string
		run     bool // the run itself sends it
		real    bool // the real run sends it
		needFor report.NeedFor
	}{
		{"list", true, true, report.NeedForRun},
		{"get", true, true, report.NeedForRun},
		{"patch", writes, true, report.NeedForRewrite},
		{"create", writes && scope.Replaces, scope.Replaces, report.NeedForReplace},
		{"delete", writes && scope.Replaces, scope.Replaces, report.NeedForReplace},
	} {
		if !v.run && !(dry && v.real) {
			continue
		}
		ok, err := allowed(namespace, v.verb, nadv1.GroupVersion.Group, nadv1.Resource, "")
		if err != nil {
			return nil, err
		}
		switch {
		case ok:
		case v.run:
			denied = append(denied, v.verb)
		case v.needFor == report.NeedForRewrite:
			deniedRewrite = append(deniedRewrite, v.verb)
		default:
			deniedReplace = append(deniedReplace, v.verb)
		}
	}
	if len(denied) > 0 {
		msg := fmt.Sprintf("This identity may not %s NetworkAttachmentDefinitions %s; %s", strings.Join(denied, " or "), scopeWords, grant)
		if slices.Contains(denied, "create") || slices.Contains(denied, "delete") {
			msg += ", or pass --recreate=never to only ever update NADs in place"
		}
		return nil, &preflightError{Msg: msg + "."}
	}
	if len(deniedRewrite) > 0 {
		needs = append(needs, report.Need{What: fmt.Sprintf("%s NetworkAttachmentDefinitions %s", strings.Join(deniedRewrite, " or "), scopeWords), For: report.NeedForRewrite, Advice: grant})
	}
	if len(deniedReplace) > 0 {
		needs = append(needs, report.Need{What: fmt.Sprintf("%s NetworkAttachmentDefinitions %s%s", strings.Join(deniedReplace, " or "), scopeWords, replaceWords(writes)),
			For: replaceNeed(writes), Advice: grant + ", or pass --recreate=never to only ever update NADs in place"})
	}

	// The backup namespace: the real run's Lease, and the backups of the
	// NADs it replaces with their signing key.
	type check struct {
		verb, group, resource, name string
		needFor                     report.NeedFor
	}
	var checks []check
	if scope.Replaces {
		for _, verb := range []string{"create", "get", "list", "update", "delete"} {
			checks = append(checks, check{verb, "", "secrets", "", replaceNeed(writes)})
		}
		checks = append(checks, check{"get", "", "secrets", replace.KeySecretName, replaceNeed(writes)},
			check{"get", "", "secrets", replace.EarlierKeySecretName, replaceNeed(writes)})
	}
	checks = append(checks, check{"create", "coordination.k8s.io", "leases", "", report.NeedForRun},
		check{"get", "coordination.k8s.io", "leases", runlock.LeaseName, report.NeedForRun},
		check{"update", "coordination.k8s.io", "leases", runlock.LeaseName, report.NeedForRun})
	backupAdvice := fmt.Sprintf("grant the netconf-migrator-job Role in namespace %s (config/job), pass --backup-namespace, or --recreate=never", scope.BackupNamespace)
	missing := map[string][]string{} // "resource named name" -> verbs, for a dry run
	var order []string
	forOf := map[string]report.NeedFor{}
	for _, c := range checks {
		ok, err := allowed(scope.BackupNamespace, c.verb, c.group, c.resource, c.name)
		if err != nil {
			return nil, err
		}
		if ok {
			continue
		}
		what := c.resource
		if c.name != "" {
			what += " named " + c.name
		}
		if !dry {
			return nil, &preflightError{Msg: fmt.Sprintf("This identity may not %s %s in namespace %s, where the run keeps its Lease, the backups of the NADs it replaces and their signing key;"+
				" grant the netconf-migrator-job Role (config/job), pass --backup-namespace, or --recreate=never.", c.verb, what, scope.BackupNamespace)}
		}
		if _, seen := missing[what]; !seen {
			order = append(order, what)
		}
		missing[what] = append(missing[what], c.verb)
		forOf[what] = c.needFor
	}
	for _, what := range order {
		advice := backupAdvice
		if forOf[what] == report.NeedForRun {
			advice = fmt.Sprintf("grant the netconf-migrator-job Role in namespace %s (config/job), or pass --backup-namespace", scope.BackupNamespace)
		}
		words := ""
		if forOf[what] != report.NeedForRun {
			words = replaceWords(writes)
		}
		needs = append(needs, report.Need{What: fmt.Sprintf("%s %s in namespace %s%s", strings.Join(missing[what], " or "), what, scope.BackupNamespace, words), For: forOf[what], Advice: advice})
	}

	// A write refused for the rights just found missing says nothing more:
	// the namespace is then only read.
	need, err := backupNamespaceReady(ctx, kube, call, transient, scope, writes && len(order) == 0)
	if err != nil {
		return nil, err
	}
	if need != nil {
		needs = append(needs, *need)
	}
	return needs, nil
}

// replaceNeed is who needs what a replacement sends: the NADs a server dry
// run would replace; in a client dry run, which sends nothing and so
// cannot tell which in-place updates admission refuses, every NAD it would
// rewrite.
func replaceNeed(writes bool) report.NeedFor {
	if writes {
		return report.NeedForReplace
	}
	return report.NeedForRewrite
}

// replaceWords says, in a client dry run, when a replacement's need bites.
func replaceWords(writes bool) string {
	if writes {
		return ""
	}
	return " (to replace a NAD whose update in place admission refuses)"
}

// backupNamespaceReady checks that the backup namespace exists and that
// admission lets the run write there; a real run makes it where this
// identity may, as helm --create-namespace does. For a dry run, a
// namespace the real run could not make or write in is a need. With write
// unset, it only reads the namespace, when it may.
func backupNamespaceReady(ctx context.Context, kube kubernetes.Interface, call func(func() error) error, transient func(error) bool, scope preflightScope, write bool) (*report.Need, error) {
	dry := !scope.Stores
	ns := scope.BackupNamespace
	// A dry-run create shows the namespace exists and admission lets us
	// write there; SelfSubjectAccessReviews allow a namespace that does
	// not exist. A client dry run sends no write, so it reads the
	// namespace instead, when it may.
	meta := metav1.ObjectMeta{Namespace: ns, GenerateName: "netconf-migrator-preflight-"}
	opts := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	probe := func() error {
		return call(func() error {
			var err error
			switch {
			case !write:
				_, err = kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			case scope.Replaces:
				_, err = kube.CoreV1().Secrets(ns).Create(ctx, replace.Probe(ns, meta.GenerateName), opts)
			default:
				_, err = kube.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: meta}, opts)
			}
			return err
		})
	}
	err := probe()
	if !write && apierrors.IsForbidden(err) {
		// This identity may not read namespaces: whether it exists is not
		// known here, and the real run finds out.
		return nil, nil
	}
	if apierrors.IsNotFound(err) {
		err = createBackupNamespace(ctx, kube, call, transient, scope)
		if err == nil && !dry {
			err = probe()
		}
	}
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, errMayNotCreate) && dry:
		return &report.Need{What: fmt.Sprintf("the namespace %s, which does not exist, and this identity may not create it", ns), For: report.NeedForRun,
			Advice: fmt.Sprintf("create it (kubectl create namespace %s) or pass --backup-namespace", ns)}, nil
	case errors.Is(err, errMayNotCreate):
		return nil, &preflightError{Msg: fmt.Sprintf("The namespace %s, where the run keeps its Lease and the backups of the NADs it replaces, does not exist, and this identity may not create it;"+
			" create it (kubectl create namespace %s) or pass --backup-namespace.", ns, ns)}
	case dry && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)):
		// Admission in that namespace (a policy, a quota) refuses it.
		return &report.Need{What: fmt.Sprintf("to write in namespace %s, which admission refuses: %s", ns, apiMessage(err)), For: report.NeedForRun,
			Advice: "pass --backup-namespace, or let this identity write there"}, nil
	}
	return nil, &preflightError{Msg: fmt.Sprintf("Cannot write a backup in namespace %s: %v.", ns, apiMessage(err)), Transient: transient(err)}
}

var errMayNotCreate = errors.New("may not create the namespace")

// createBackupNamespace makes the backup namespace for a real run (labelled
// as config/ labels it: restricted Pod security, nothing but the tool's
// Secrets), or, for a dry run, checks that the real run may. It returns
// errMayNotCreate when this identity may not.
func createBackupNamespace(ctx context.Context, kube kubernetes.Interface, call func(func() error) error, transient func(error) bool, scope preflightScope) error {
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
		return false, &preflightError{Msg: fmt.Sprintf("Cannot check this identity's permissions on %s: %v.", resource, apiMessage(err)), Transient: transient(err)}
	}
	return res.Status.Allowed, nil
}

func apiMessage(err error) string {
	if s, ok := err.(apierrors.APIStatus); ok {
		return s.Status().Message
	}
	return err.Error()
}
