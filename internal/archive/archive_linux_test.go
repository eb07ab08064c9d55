package archive

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/treetest"
)

func requireRoot(t *testing.T) {
	t.Helper()
	require.Zero(t, os.Geteuid(), "archive tests set owners, trusted.* xattrs and device nodes: run them as root (make unit does)")
}

func TestRoundTripKeepsEveryKindOfFile(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	sparse := treetest.Build(t, src)
	want := treetest.Snapshot(t, src)
	dst, _ := roundTrip(t, src)
	treetest.RequireSame(t, want, treetest.Snapshot(t, dst))
	treetest.RequireSame(t, want, treetest.Snapshot(t, src)) // the backup changed no atime either
	treetest.RequireSparse(t, filepath.Join(dst, filepath.Base(sparse)))
	entries, err := os.ReadDir(dst)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), stagingPrefix, "the staging directory was left behind")
	}
}

// A stream of a tree that is not sparse carries exactly its data: a sparse
// map is written only where there are holes.
func TestSparseMapOnlyForHoles(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "dense"), make([]byte, 1<<16), 0o644))
	_, stream := roundTrip(t, src)
	require.NotContains(t, string(stream), recMap)
}
