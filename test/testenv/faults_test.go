package testenv

import (
	"context"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestControlPlaneFaults: the faults the chaos soak injects do what they
// say. After a kube-apiserver crash and after a graceful restart, what was
// stored is still there (the same etcd) and the same clients reach it (the
// same port and certificates). While etcd is paused, a write waits; it
// lands once etcd continues.
func TestControlPlaneFaults(t *testing.T) {
	ctx := context.Background()
	if err := env.CreateNamespace(ctx, "faults", nil); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "faults", Name: "before"}, Data: map[string]string{"k": "v"}}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGKILL} {
		before, err := findProcess(env.env.ControlPlane.APIServer.Path, "--cert-dir="+env.env.ControlPlane.APIServer.CertDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.RestartAPIServer(ctx, sig); err != nil {
			t.Fatalf("restarting on %s: %v", sig, err)
		}
		after, err := findProcess(env.env.ControlPlane.APIServer.Path, "--cert-dir="+env.env.ControlPlane.APIServer.CertDir)
		if err != nil || after == before {
			t.Fatalf("after %s the kube-apiserver is pid %d (was %d): %v", sig, after, before, err)
		}
		got := &corev1.ConfigMap{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cm), got); err != nil || got.Data["k"] != "v" {
			t.Fatalf("after %s: %v, %v", sig, got.Data, err)
		}
	}

	landed := make(chan error, 1)
	paused := make(chan error, 1)
	go func() { paused <- env.PauseEtcd(2 * time.Second) }()
	time.Sleep(300 * time.Millisecond) // etcd is stopped by now
	go func() {
		landed <- env.Client.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "faults", Name: "during"}})
	}()
	select {
	case err := <-landed:
		t.Fatalf("a write landed while etcd was paused: %v", err)
	case err := <-paused:
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-landed; err != nil {
		t.Errorf("the write sent while etcd was paused: %v", err)
	}
}
