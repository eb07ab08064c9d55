package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// TestReadmeDocumentsTheAdminCommands: every admin command, and how to
// reach the managed plugin's socket, are in the README and in --help.
func TestReadmeDocumentsTheAdminCommands(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	help, _ := exec.Command(binary, "--help").CombinedOutput()
	for name, c := range commands {
		usage := strings.ReplaceAll(c.usage, "|", `\|`)
		assert.Contains(t, string(readme), "`holdfast "+usage+"`", "README must document holdfast %s", name)
		assert.Contains(t, string(help), c.usage, "--help must list holdfast %s", name)
		cmdHelp, err := exec.Command(binary, name, "--help").CombinedOutput()
		require.NoError(t, err, "%s", cmdHelp)
		assert.Contains(t, string(cmdHelp), "/run/docker/plugins/<plugin id>/holdfast.sock", "holdfast %s --help", name)
	}
	for _, s := range []string{"/run/docker/plugins/<plugin id>/holdfast.sock", "docker plugin inspect -f '{{.ID}}' holdfast"} {
		assert.Contains(t, string(readme), s)
		assert.Contains(t, string(help), s)
	}
}
