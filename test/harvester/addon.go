package harvester

import (
	"context"
	_ "embed"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"
)

// AddonGVK is Harvester's add-on: a Helm chart its addon controller
// installs through helm-controller when spec.enabled is true.
var AddonGVK = schema.GroupVersionKind{Group: "harvesterhci.io", Version: "v1beta1", Kind: "Addon"}

// AddonExperimentalLabel marks an add-on Harvester lets a person delete
// (pkg/util/constants.go: "addon." + "harvesterhci.io" + "/experimental").
const AddonExperimentalLabel = "addon.harvesterhci.io/experimental"

//go:embed testdata/harvesterhci.io_addons.yaml
var addonCRD []byte

// AddonCRD is Harvester's own Addon CRD (the same at v1.5.0, v1.6.0, v1.7.0
// and master): its schema requires spec.repo, chart, version, enabled and
// valuesContent.
func AddonCRD() *apiextensionsv1.CustomResourceDefinition {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(addonCRD, crd); err != nil {
		panic(fmt.Sprintf("testdata/harvesterhci.io_addons.yaml: %v", err))
	}
	return crd
}

// AddonValidator is Harvester's addon validator
// (pkg/webhook/resources/addon/validator.go in harvester/harvester at
// v1.5.0, v1.6.0, v1.7.0 and master), the rules an add-on of ours meets:
//   - CREATE: no second Addon of the same chart, in any namespace
//     (NewConflict: through wrangler's router, an internal error);
//   - UPDATE: spec.chart cannot change, and no change while an operation
//     is in progress (condition InProgress);
//   - DELETE, from v1.7.0 (v1.5.0 and v1.6.0 register CREATE and UPDATE
//     only): only an Addon labelled experimental, and never
//     rancher-logging or rancher-monitoring (master adds kubeovn-operator).
//
// The rules for Harvester's own add-ons (vcluster's hostname, logging's
// flows, the descheduler's node count) are not modelled: they look at
// those names only.
type AddonValidator struct {
	Release Release
	Client  client.Client
}

// DeletesJudged says whether the release's validator sees add-on deletes.
func (v AddonValidator) DeletesJudged() bool { return v.Release.AtLeast(V17) }

func (v AddonValidator) handle(ctx context.Context, req admission.Request) admission.Response {
	decode := func(raw []byte) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		if len(raw) == 0 {
			return nil, nil
		}
		return u, u.UnmarshalJSON(raw)
	}
	obj, err := decode(req.Object.Raw)
	if err != nil {
		return answer(err)
	}
	old, err := decode(req.OldObject.Raw)
	if err != nil {
		return answer(err)
	}
	chart := func(u *unstructured.Unstructured) string {
		s, _, _ := unstructured.NestedString(u.Object, "spec", "chart")
		return s
	}
	switch req.Operation {
	case admissionv1.Create:
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(AddonGVK.GroupVersion().WithKind("AddonList"))
		if err := v.Client.List(ctx, list); err != nil {
			return answer(fmt.Errorf("cannot list addons, err: %+v", err))
		}
		for _, a := range list.Items {
			if chart(&a) == chart(obj) {
				return answer(fmt.Errorf("addon with Chart %q has been created, cannot create a new one", chart(&a)))
			}
		}
	case admissionv1.Update:
		if chart(obj) != chart(old) {
			return answer(&BadRequest{Msg: "chart field cannot be changed."})
		}
		conds, _, _ := unstructured.NestedSlice(old.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "InProgress" && m["status"] == "True" {
				return answer(&BadRequest{Msg: fmt.Sprintf("cannot perform operation, as an existing operation is in progress on addon %s", old.GetName())})
			}
		}
	case admissionv1.Delete:
		if !v.DeletesJudged() || old == nil {
			return answer(nil)
		}
		protected := old.GetName() == "rancher-logging" || old.GetName() == "rancher-monitoring" || (v.Release.AtLeast(V18) && old.GetName() == "kubeovn-operator")
		if protected || old.GetLabels()[AddonExperimentalLabel] != "true" {
			return answer(&BadRequest{Msg: fmt.Sprintf("%v/%v addon cannot be deleted", old.GetNamespace(), old.GetName())})
		}
	}
	return answer(nil)
}

// addonRules are the add-on operations the release's validator registers.
func (v AddonValidator) addonRules() admissionregistrationv1.RuleWithOperations {
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	if v.DeletesJudged() {
		ops = append(ops, admissionregistrationv1.Delete)
	}
	return admissionregistrationv1.RuleWithOperations{
		Operations: ops,
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{AddonGVK.Group}, APIVersions: []string{AddonGVK.Version},
			Resources: []string{"addons"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope),
		},
	}
}
