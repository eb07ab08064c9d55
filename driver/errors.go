package driver

import (
	"errors"
	"fmt"
)

// Errors returned by the driver. Each is wrapped in a message that names
// the volume and the fix; test for them with errors.Is.
var (
	ErrNotFound    = errors.New("no such volume")
	ErrInUse       = errors.New("volume is in use")
	ErrConflict    = errors.New("volume exists with different options")
	ErrUnknownType = errors.New("unknown volume type")
)

// kindError is an error whose message stands alone and that matches kind.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// errorf formats a message that errors.Is matches with kind, without
// repeating kind's own text.
func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
