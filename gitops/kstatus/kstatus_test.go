// Flux reads the health of PSSessions and PSJobs with kstatus (sigs.k8s.io/cli-utils), the same
// rules `kubectl wait`-style tools and kpt use. This test runs kstatus itself on objects shaped as
// the operator writes them (the Argo CD test data, shared) and checks what a user expects:
// Current when Ready, InProgress while opening or while observedGeneration lags, Failed when
// Stalled; a job InProgress while Queued or Running, Current when Completed, Failed when it failed.
package kstatus

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

const testdata = "../argocd/resource_customizations/psremoting.dev"

func TestKstatusReadsTheOperatorsStatus(t *testing.T) {
	cases := map[string]status.Status{
		"PSSession/testdata/new.yaml":            status.CurrentStatus, // kstatus: no conditions at all is Current; the operator writes Ready=Unknown on its first reconcile
		"PSSession/testdata/opening.yaml":        status.InProgressStatus,
		"PSSession/testdata/opened.yaml":         status.CurrentStatus,
		"PSSession/testdata/idle-closed.yaml":    status.CurrentStatus,
		"PSSession/testdata/auth-failed.yaml":    status.FailedStatus,
		"PSSession/testdata/generation-lag.yaml": status.InProgressStatus,
		"PSJob/testdata/queued.yaml":             status.InProgressStatus,
		"PSJob/testdata/running.yaml":            status.InProgressStatus,
		"PSJob/testdata/completed.yaml":          status.CurrentStatus,
		"PSJob/testdata/failed.yaml":             status.FailedStatus,
	}
	for path, want := range cases {
		t.Run(path, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(testdata, path))
			if err != nil {
				t.Fatal(err)
			}
			// Through JSON as the API machinery decodes it: integers stay int64.
			json, err := yaml.YAMLToJSON(data)
			if err != nil {
				t.Fatal(err)
			}
			object := &unstructured.Unstructured{}
			if err := object.UnmarshalJSON(json); err != nil {
				t.Fatal(err)
			}
			result, err := status.Compute(object)
			if err != nil {
				t.Fatal(err)
			}
			if result.Status != want {
				t.Errorf("kstatus says %s (%s), want %s", result.Status, result.Message, want)
			}
		})
	}
}

// The operator's first reconcile writes Ready=Unknown with Reconciling=True: kstatus must read that
// as InProgress, not Current (a resource without a Ready condition reads as Current).
func TestFirstReconcileIsInProgress(t *testing.T) {
	object := map[string]interface{}{
		"apiVersion": "psremoting.dev/v1alpha1",
		"kind":       "PSSession",
		"metadata":   map[string]interface{}{"name": "web01", "namespace": "ops", "generation": int64(1)},
		"status": map[string]interface{}{
			"observedGeneration": int64(1),
			"conditions": []interface{}{
				map[string]interface{}{"type": "Ready", "status": "Unknown", "reason": "Pending", "message": "waiting for the operator to open it"},
				map[string]interface{}{"type": "Reconciling", "status": "True", "reason": "Pending", "message": "waiting for the operator to open it"},
				map[string]interface{}{"type": "Stalled", "status": "False", "reason": "Pending", "message": ""},
			},
		},
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: object})
	if err != nil {
		t.Fatal(err)
	}
	if result.Status != status.InProgressStatus {
		t.Errorf("kstatus says %s (%s), want InProgress", result.Status, result.Message)
	}
}
