package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadmeShowsTheTestedExamples keeps the README's compose and stack
// examples identical to the files the end-to-end suite runs.
func TestReadmeShowsTheTestedExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, f := range []string{"compose.yaml", "stack.yaml"} {
		example, err := os.ReadFile(filepath.Join("../../e2e/testdata", f))
		require.NoError(t, err)
		assert.Contains(t, string(readme), "```yaml\n"+string(example)+"```", "README must show e2e/testdata/%s as it is", f)
	}
}
