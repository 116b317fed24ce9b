package shim

import (
	"net/http"
	"slices"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// sync_mode is an extension of the old API: old clients never send it and get full runs; a new
// client may opt into incremental.
func TestProcessSyncMode(t *testing.T) {
	e := startShim(t, testCluster(t))
	for _, tc := range []struct {
		name, extra string
		want        *v1alpha1.SyncSpec
	}{
		{"old client", ``, nil},
		{"incremental", `,"sync_mode":"incremental"`, &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental}},
		{"full", `,"sync_mode":"full"`, &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}},
		{"null is absent", `,"sync_mode":null`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := post(t, e, `{"s3_key":"exports/239-200-300.csv","question_id":239`+tc.extra+`}`)
			got := resourceOf(t, e, pr.TaskID).Spec.Sync
			if (got == nil) != (tc.want == nil) || (got != nil && got.Mode != tc.want.Mode) {
				t.Fatalf("spec.sync %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, body := range []string{`"sync_mode":"delta"`, `"sync_mode":1`} {
		r := do(t, http.MethodPost, e.URL+"/api/v1/process", testKey, `{"s3_key":"a.csv","question_id":239,`+body+`}`)
		if r.Code != http.StatusUnprocessableEntity || !slices.Equal(r.fieldLocs(t), []string{"body.sync_mode"}) {
			t.Fatalf("%s: %d %s, want 422 naming body.sync_mode", body, r.Code, r.Body)
		}
	}
}
