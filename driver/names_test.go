package driver

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"db", true},
		{"my-vol_1.data", true},
		{"0abc", true},
		{"a..", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{"a", false},
		{"/", false},
		{"..", false},
		{".hidden", false},
		{"-dash", false},
		{"_under", false},
		{"../etc", false},
		{"a/b", false},
		{"a\x00b", false},
		{"a b", false},
		{"é-unicode", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if tt.ok {
			assert.NoError(t, err, "%q", tt.name)
			continue
		}
		if assert.Error(t, err, "%q", tt.name) {
			assert.ErrorIs(t, err, ErrInvalidName)
			assert.Contains(t, err.Error(), "a-zA-Z0-9", "error states the rule")
		}
	}
}
