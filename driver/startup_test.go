package driver

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStartupCommitsOnce: a start-up costs a constant number of database
// commits (each two fdatasyncs) however many volumes the state holds:
// none in the same boot, one after a reboot for every record that held
// leases.
// Commits are counted, never timed.
func TestStartupCommitsOnce(t *testing.T) {
	const n = 500
	r := newRig(t)
	for i := range n {
		r.create(fmt.Sprintf("v%03d", i), nil)
	}
	for i := range 10 {
		r.mount(fmt.Sprintf("v%03d", i), fmt.Sprintf("id%d", i))
	}

	r.restart(false)
	assert.Zero(t, r.d.store.commits.Load(), "a start in the same boot")

	r.restart(true)
	assert.EqualValues(t, 1, r.d.store.commits.Load(), "a start after a reboot: the leases of every volume dropped in one commit")
	vols, err := r.d.store.All()
	require.NoError(t, err)
	require.Len(t, vols, n)
	for _, v := range vols {
		assert.Empty(t, v.Leases, v.Name)
		assert.False(t, v.Mounted, v.Name)
	}

	r.restart(false)
	assert.Zero(t, r.d.store.commits.Load(), "the next start in that boot")
}
