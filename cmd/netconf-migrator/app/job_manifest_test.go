package app

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"
)

// TestJobFailurePolicyFollowsTheExitCodes: the migration Job fails at once
// on the exit codes a retry cannot change (1: NADs need a person, 2: usage
// or preflight), and retries a run stopped early (3) and crashes.
func TestJobFailurePolicyFollowsTheExitCodes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "job", "job.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{}
	if err := yaml.UnmarshalStrict(raw, job); err != nil {
		t.Fatal(err)
	}
	if job.Spec.PodFailurePolicy == nil {
		t.Fatal("the Job has no podFailurePolicy")
	}
	var failJob []int32
	for _, r := range job.Spec.PodFailurePolicy.Rules {
		if r.Action == batchv1.PodFailurePolicyActionFailJob && r.OnExitCodes != nil && r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn {
			failJob = append(failJob, r.OnExitCodes.Values...)
		}
	}
	for code, fail := range map[int32]bool{ExitAttention: true, ExitUsage: true, ExitStopped: false, 137: false} {
		if slices.Contains(failJob, code) != fail {
			t.Errorf("exit code %d: FailJob=%v, want %v (FailJob on %v)", code, !fail, fail, failJob)
		}
	}
}
