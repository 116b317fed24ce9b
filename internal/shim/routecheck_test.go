package shim

import "testing"

// The old route's 400s come only once the body is otherwise valid (pydantic validated the model
// before the route ran its own checks); any other bad field makes it a 422 without them.
func TestRouteChecksAfterTheModel(t *testing.T) {
	d := withDefaults(Config{Defaults: testDefaults("ns")}).Defaults
	d.MetabaseURL = "https://metabase.example.com"
	for _, tc := range []struct {
		name, body string
		invalid    int
		route      string
	}{
		{"s3_csv without question_id", `{"s3_key":"a.csv"}`, 0, DetailQuestionIDRequired},
		{"metabase without start_date", `{"data_source":"metabase","question_id":239}`, 0, DetailStartDateRequired},
		{"metabase without either", `{"data_source":"metabase"}`, 1, ""},
		{"s3_csv without question_id and s3_key", `{}`, 1, ""},
		{"s3_csv complete", `{"s3_key":"a.csv","question_id":239}`, 0, ""},
		{"metabase complete", `{"data_source":"metabase","question_id":239,"start_date":"2025-01-10"}`, 0, ""},
	} {
		_, errs := ParseProcessRequest([]byte(tc.body), d)
		invalid, route := splitRouteChecks(errs)
		if len(invalid) != tc.invalid || route != tc.route {
			t.Errorf("%s: %d invalid %v, route %q; want %d invalid, route %q", tc.name, len(invalid), invalid, route, tc.invalid, tc.route)
		}
	}
}
