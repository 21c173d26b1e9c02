package detect

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/internal/harvester"
)

// KubeVirt's kinds, read as unstructured: only their Multus networks matter.
var (
	vmGVK  = schema.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachine"}
	vmiGVK = schema.GroupVersionKind{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachineInstance"}
)

// Readiness lists the VMs and VMIs whose networks reference a NAD stored in
// a legacy form: a running VMI on one cannot live-migrate (the target
// Pod's attachment fails), which blocks the node drain of a Harvester
// upgrade; a stopped VM on one fails to start.
type Readiness struct {
	// VMs lists VMs and VMIs (uncached: read only on demand).
	VMs client.Reader
	// NADs reads NADs (the trimmed cache is enough: it keeps the form).
	NADs client.Reader
	Log  logr.Logger
}

// BlockedVMs returns every VM and VMI on a legacy NAD, VMIs first; nothing
// when KubeVirt is not installed.
func (r *Readiness) BlockedVMs(ctx context.Context) ([]v1alpha1.VMReference, error) {
	forms := map[types.NamespacedName]netconf.Form{}
	formOf := func(key types.NamespacedName) (netconf.Form, error) {
		if f, ok := forms[key]; ok {
			return f, nil
		}
		nad := &nadv1.NetworkAttachmentDefinition{}
		if err := r.NADs.Get(ctx, key, nad); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return "", err
			}
			forms[key] = ""
			return "", nil
		}
		forms[key] = CachedForm(nad)
		return forms[key], nil
	}
	var out []v1alpha1.VMReference
	running := map[types.NamespacedName]bool{}
	for _, kind := range []struct {
		gvk  schema.GroupVersionKind
		path []string
	}{{vmiGVK, []string{"spec", "networks"}}, {vmGVK, []string{"spec", "template", "spec", "networks"}}} {
		err := r.each(ctx, kind.gvk, func(u *unstructured.Unstructured) error {
			key := types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}
			if kind.gvk == vmiGVK {
				running[key] = true
			}
			nets, _, _ := unstructured.NestedSlice(u.Object, kind.path...)
			for _, n := range nets {
				name, _, _ := unstructured.NestedString(asMap(n), "multus", "networkName")
				if name == "" {
					continue
				}
				ref := types.NamespacedName{Namespace: u.GetNamespace(), Name: name}
				if ns, nm, ok := strings.Cut(name, "/"); ok {
					ref = types.NamespacedName{Namespace: ns, Name: nm}
				}
				form, err := formOf(ref)
				if err != nil {
					return err
				}
				if !Legacy(form) {
					continue
				}
				out = append(out, v1alpha1.VMReference{Kind: kind.gvk.Kind, Namespace: key.Namespace, Name: key.Name, NAD: ref.String(), Form: string(form),
					Advice: harvester.VMUpgradeAdvice(kind.gvk == vmiGVK, running[key], string(form))})
			}
			return nil
		})
		if meta.IsNoMatchError(err) {
			return nil, nil // KubeVirt is not installed
		}
		if err != nil {
			return nil, fmt.Errorf("listing %ss: %w", kind.gvk.Kind, err)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind > out[j].Kind // VirtualMachineInstance first
		}
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out, nil
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// each lists one kind page by page.
func (r *Readiness) each(ctx context.Context, gvk schema.GroupVersionKind, f func(*unstructured.Unstructured) error) error {
	cont := ""
	for {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.VMs.List(ctx, list, client.Limit(500), client.Continue(cont)); err != nil {
			return err
		}
		for i := range list.Items {
			if err := f(&list.Items[i]); err != nil {
				return err
			}
		}
		if cont = list.GetContinue(); cont == "" {
			return nil
		}
	}
}

// Start keeps the gauge netconf_migrator_legacy_nad_vms current, every
// interval, until ctx ends.
func (r *Readiness) Start(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		vms, err := r.BlockedVMs(ctx)
		if err != nil {
			r.Log.Error(err, "Listing the VMs attached to legacy NADs failed")
		} else {
			counts := map[string]int{vmGVK.Kind: 0, vmiGVK.Kind: 0}
			for _, v := range vms {
				counts[v.Kind]++
			}
			for k, n := range counts {
				legacyVMs.WithLabelValues(k).Set(float64(n))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
