package source

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// templateTagParam is how Metabase takes a value for a native question's template tag.
type templateTagParam struct {
	Type   string `json:"type"`
	Target []any  `json:"target"`
	Value  string `json:"value"`
}

// MetabaseParameters renders spec parameters as native-question template tags, sorted by name so
// the request is deterministic.
func MetabaseParameters(params map[string]string) []templateTagParam {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]templateTagParam, 0, len(names))
	for _, k := range names {
		out = append(out, templateTagParam{
			Type:   "text",
			Target: []any{"variable", []any{"template-tag", k}},
			Value:  params[k],
		})
	}
	return out
}

// Staged is a Metabase export in S3.
type Staged struct {
	Key string
	// Unterminated: the export's stream ended without its final newline (Metabase ends every
	// row with one), so it was cut short after the 200.
	Unterminated bool
}

// StageMetabase exports the question as CSV (raw values: format_rows=false) and streams it into
// S3 with a multipart upload at <stageTo.keyPrefix><taskID>.csv (taskID: the ingestion's
// worker.Ingestion.ObjectID, task id and uid).
func StageMetabase(ctx context.Context, hc *http.Client, mb *v1alpha1.MetabaseSource, apiKey string, cl *s3.Client, taskID string) (Staged, error) {
	if apiKey == "" {
		return Staged{}, worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("no Metabase API key (%s is empty)", worker.EnvMetabaseAPIKey))
	}
	params, err := json.Marshal(MetabaseParameters(mb.Parameters))
	if err != nil {
		return Staged{}, fmt.Errorf("encode Metabase parameters: %w", err)
	}
	form := url.Values{"parameters": {string(params)}, "format_rows": {"false"}}
	endpoint := fmt.Sprintf("%s/api/card/%d/query/csv", strings.TrimRight(mb.URL, "/"), mb.QuestionID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Staged{}, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("metabase request: %w", err))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("x-api-key", apiKey)
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Staged{}, fmt.Errorf("metabase export of question %d: %w", mb.QuestionID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		err := fmt.Errorf("metabase export of question %d: HTTP %d: %s", mb.QuestionID, resp.StatusCode, strings.TrimSpace(string(body)))
		switch {
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return Staged{}, worker.Permanent(worker.ReasonUnauthorized, err)
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest:
			return Staged{}, worker.Permanent(worker.ReasonSourceMissing, err)
		}
		return Staged{}, err
	}
	key := mb.StageTo.KeyPrefix + taskID + ".csv"
	body := &lastByte{r: resp.Body}
	up := manager.NewUploader(cl, func(u *manager.Uploader) { u.PartSize = 16 << 20; u.Concurrency = 2 })
	if _, err := up.Upload(ctx, &s3.PutObjectInput{
		Bucket: &mb.StageTo.Bucket, Key: &key, Body: body, ContentType: strPtr("text/csv"),
	}); err != nil {
		return Staged{}, classify(fmt.Sprintf("s3://%s/%s", mb.StageTo.Bucket, key), err)
	}
	return Staged{Key: key, Unterminated: body.n > 0 && body.last != '\n'}, nil
}

// lastByte remembers the last byte read and how many were.
type lastByte struct {
	r    io.Reader
	n    int64
	last byte
}

func (l *lastByte) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.n += int64(n)
		l.last = p[n-1]
	}
	return n, err
}

// Truncation says why a staged Metabase export of rows rows looks cut short ("" when it does
// not): it ended without its final newline, or it has exactly the instance's export row limit.
func Truncation(mb *v1alpha1.MetabaseSource, st Staged, rows int64) string {
	limit := mb.ExportRowLimit
	if limit <= 0 {
		limit = v1alpha1.DefaultMetabaseExportRowLimit
	}
	switch {
	case st.Unterminated:
		return fmt.Sprintf("the export of Metabase question %d ended without its final newline after %d rows: the stream was cut short, rows may be missing", mb.QuestionID, rows)
	case rows == limit:
		return fmt.Sprintf("the export of Metabase question %d has exactly %d rows, the instance's export row limit (spec.source.metabase.exportRowLimit): rows past it may be missing", mb.QuestionID, rows)
	}
	return ""
}

func strPtr(s string) *string { return &s }
