package driver

import (
	"errors"
	"fmt"
	"regexp"
)

// MaxNameLen is the longest volume name accepted, in bytes.
const MaxNameLen = 255

// nameRule is Docker's rule for local volume names.
var nameRule = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// ErrInvalidName is wrapped by every name validation error.
var ErrInvalidName = errors.New("invalid volume name")

// ValidateName checks name against Docker's rule for local volume names,
// [a-zA-Z0-9][a-zA-Z0-9_.-]+ and at most 255 bytes. It is called before
// any path is built from a name.
func ValidateName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes is longer than %d; names must match [a-zA-Z0-9][a-zA-Z0-9_.-]+",
			ErrInvalidName, len(name), MaxNameLen)
	}
	if !nameRule.MatchString(name) {
		return fmt.Errorf("%w %q: names must be at least 2 characters of [a-zA-Z0-9_.-], starting with a letter or digit",
			ErrInvalidName, name)
	}
	return nil
}
