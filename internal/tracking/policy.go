package tracking

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
)

// Reasons of a refused task-table write, as the TrackingDegraded condition shows them.
const (
	ReasonEndpointNotAllowed = "EndpointNotAllowed"
	ReasonTableNotAllowed    = "TableNotAllowed"
	ReasonRegionInvalid      = "RegionInvalid"
	ReasonOwnedElsewhere     = "TaskOwnedByAnotherIngestion"
)

// RefusedError is a task-table write the operator decided not to make (the manager's policy
// refuses the spec's table or endpoint) or that the table refused for good (the item belongs to
// another ingestion). Retrying does not help; the spec must change. The controller shows Reason
// in the TrackingDegraded condition (see controllers.TrackingRefusal).
type RefusedError struct {
	Reason string
	Err    error
}

func (e *RefusedError) Error() string          { return e.Err.Error() }
func (e *RefusedError) Unwrap() error          { return e.Err }
func (e *RefusedError) TrackingReason() string { return e.Reason }

// ErrNotAllowed is wrapped by every refusal of the policy.
var ErrNotAllowed = errors.New("not allowed by the operator's task-table policy")

// Policy limits the task tables a spec may name. The manager signs every task-table request
// with its own AWS identity, so without it a CsvIngestion author could make the manager send
// signed requests to any URL (spec.tracking.dynamoDB.endpoint) or write to any table that
// identity can reach.
type Policy struct {
	// AllowedEndpoints are the endpoints (scheme://host[:port]) a spec may name besides AWS's own,
	// which a spec gets by leaving the endpoint empty. Empty: AWS endpoints only.
	AllowedEndpoints []string
	// AllowedTables and TablePrefixes: when either is set, a spec's table must be one of
	// AllowedTables or start with one of TablePrefixes. Both empty: any table.
	AllowedTables []string
	TablePrefixes []string
}

// region names one AWS region, e.g. us-east-1; it becomes part of the endpoint's host name.
var region = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// normalizeEndpoint makes endpoints comparable: lower-case scheme and host, no trailing slash.
// Anything beyond scheme, host, port and path (user info, query, fragment) is refused.
func normalizeEndpoint(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("endpoint %q: want http(s)://host[:port] with nothing else", s)
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + strings.TrimRight(u.EscapedPath(), "/"), nil
}

// compile checks the policy's own settings and normalises its endpoints.
func (p Policy) compile() (Policy, error) {
	out := Policy{AllowedTables: p.AllowedTables, TablePrefixes: p.TablePrefixes}
	for _, e := range p.AllowedEndpoints {
		if strings.TrimSpace(e) == "" {
			continue
		}
		n, err := normalizeEndpoint(e)
		if err != nil {
			return Policy{}, fmt.Errorf("allowed DynamoDB endpoint: %w", err)
		}
		out.AllowedEndpoints = append(out.AllowedEndpoints, n)
	}
	return out, nil
}

// Check says whether a spec may use d. Its error is a *RefusedError wrapping ErrNotAllowed.
func (p Policy) Check(d *v1alpha1.DynamoDBTracking) error {
	if d.Region != "" && !region.MatchString(d.Region) {
		return &RefusedError{Reason: ReasonRegionInvalid, Err: fmt.Errorf(
			"task table region %q: %w: a region is a name like us-east-1", d.Region, ErrNotAllowed)}
	}
	if d.Endpoint != "" {
		n, err := normalizeEndpoint(d.Endpoint)
		if err != nil || !slices.Contains(p.AllowedEndpoints, n) {
			return &RefusedError{Reason: ReasonEndpointNotAllowed, Err: fmt.Errorf(
				"task table endpoint %q: %w: only AWS endpoints (an empty endpoint) are allowed unless the operator lists the endpoint in --tracking-allowed-endpoints", d.Endpoint, ErrNotAllowed)}
		}
	}
	if len(p.AllowedTables) == 0 && len(p.TablePrefixes) == 0 {
		return nil
	}
	if slices.Contains(p.AllowedTables, d.Table) {
		return nil
	}
	for _, pre := range p.TablePrefixes {
		if pre != "" && strings.HasPrefix(d.Table, pre) {
			return nil
		}
	}
	return &RefusedError{Reason: ReasonTableNotAllowed, Err: fmt.Errorf(
		"task table %q: %w: the operator allows the tables %s and the prefixes %s (--tracking-allowed-tables, --tracking-table-prefixes)",
		d.Table, ErrNotAllowed, listOrNone(p.AllowedTables), listOrNone(p.TablePrefixes))}
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// refusal turns the table's refusal of a write on another ingestion's item into a RefusedError.
func refusal(err error) error {
	if errors.Is(err, tasktable.ErrOwnedElsewhere) {
		return &RefusedError{Reason: ReasonOwnedElsewhere, Err: err}
	}
	return err
}
