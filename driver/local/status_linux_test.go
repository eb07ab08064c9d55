package local

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/usage"
)

// TestLocalStatusIsTheVolumesOwnUsage: used is what the volume's data
// directory holds, measured in the background, whether mounted or not;
// before the first walk Status says it is pending, never blocks.
func TestLocalStatusIsTheVolumesOwnUsage(t *testing.T) {
	w := usage.New(usage.Config{Refresh: 10 * time.Millisecond})
	defer w.Close()
	b := &Backend{Walker: w}
	v := &driver.Volume{Name: "v", Type: "local", Dir: t.TempDir()}
	require.NoError(t, os.Mkdir(dataDir(v), 0o755))
	first := b.Status(v)
	assert.Contains(t, first, "filesystemAvailable")
	if _, measured := first["used"]; !measured {
		assert.Contains(t, first, "usedPending")
	}
	require.NoError(t, os.WriteFile(filepath.Join(dataDir(v), "f"), make([]byte, 5<<20), 0o644))
	require.Eventually(t, func() bool {
		used, ok := b.Status(v)["used"].(int64)
		return ok && used >= 5<<20
	}, 30*time.Second, 5*time.Millisecond, "used grows to the data written")
	st := b.Status(v)
	assert.Contains(t, st, "usedAge")
	assert.EqualValues(t, 2, st["usedEntries"], "the data directory and one file")
	assert.True(t, b.Meter(v).UsedKnown)

	// Removed: the walker forgets it.
	require.NoError(t, b.Remove(t.Context(), v))
	assert.False(t, b.Meter(v).UsedKnown)
}
