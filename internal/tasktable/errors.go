package tasktable

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// credentialsError marks a failure to obtain credentials. The SDK reports it as plain text
// ("get identity: ..."), so the client's credentials provider is wrapped to keep it typed.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "no AWS credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

type markedCredentials struct{ inner aws.CredentialsProvider }

func (m markedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := m.inner.Retrieve(ctx)
	if err != nil {
		return creds, &credentialsError{err: err}
	}
	return creds, nil
}

// callOpts apply to every call: credential failures become typed errors.
func callOpts(o *dynamodb.Options) {
	switch o.Credentials.(type) {
	case nil, markedCredentials, aws.AnonymousCredentials, *aws.AnonymousCredentials:
		// Nothing to mark; the SDK recognises anonymous credentials by their type.
	default:
		o.Credentials = markedCredentials{inner: o.Credentials}
	}
}

// unavailableCodes are service errors that say the table cannot be used now, as opposed to a
// request this package got wrong.
var unavailableCodes = map[string]bool{
	"UnrecognizedClientException":            true,
	"AccessDeniedException":                  true,
	"InvalidSignatureException":              true,
	"IncompleteSignatureException":           true,
	"MissingAuthenticationToken":             true,
	"MissingAuthenticationTokenException":    true,
	"ExpiredTokenException":                  true,
	"InvalidClientTokenId":                   true,
	"ThrottlingException":                    true,
	"ProvisionedThroughputExceededException": true,
	"RequestLimitExceeded":                   true,
	"InternalServerError":                    true,
	"ServiceUnavailable":                     true,
}

// classify wraps err with what it means to the controller: ErrStale for a refused conditional
// write, ErrUnavailable when tracking cannot work now; anything else is returned wrapped as is.
func classify(what string, err error) error {
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return fmt.Errorf("%s: %w", what, ErrStale)
	}
	var rnf *types.ResourceNotFoundException
	if errors.As(err, &rnf) {
		return fmt.Errorf("%s: table not found: %w: %w", what, ErrUnavailable, err)
	}
	var ce *credentialsError
	if errors.As(err, &ce) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	var send *smithyhttp.RequestSendError
	if errors.As(err, &send) {
		return fmt.Errorf("%s: endpoint unreachable: %w: %w", what, ErrUnavailable, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) && unavailableCodes[api.ErrorCode()] {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isValidation reports a ValidationException, which a nested SET under a missing chunk map gets.
func isValidation(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "ValidationException"
}
