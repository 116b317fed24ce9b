package worker

import "errors"

// PermanentError is an error that no retry can fix (bad credentials, missing object, a header
// without the mapped columns, a changed source). The embedder exits with ExitPermanent on it.
type PermanentError struct {
	Reason string
	Err    error
}

func (e *PermanentError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as permanent with a reason.
func Permanent(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Reason: reason, Err: err}
}

// AsPermanent finds a PermanentError in err's chain.
func AsPermanent(err error) (*PermanentError, bool) {
	var p *PermanentError
	ok := errors.As(err, &p)
	return p, ok
}
