package quota

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/quota/quotatest"
)

// TestCheckRefusesTmpfs: tmpfs has no project quotas on any kernel, and the
// error says so, names the flag and points to type=loop.
func TestCheckRefusesTmpfs(t *testing.T) {
	dir := quotatest.Mount(t, "tmpfs", "")
	err := Check(dir, "--root")
	require.ErrorIs(t, err, ErrUnsupported)
	assert.Contains(t, err.Error(), "--root "+dir+" is on tmpfs, which has no project quotas")
	assert.Contains(t, err.Error(), "type=loop")
}

// TestCheckQuotaMissing: xfs and ext4 without project quotas are refused
// with the fix for that filesystem; where the kernel has no quotas for it
// (xfs on this project's host), with the kernel named as what is missing.
// The guest run (Debian's kernel has quotas) takes the other branch.
func TestCheckQuotaMissing(t *testing.T) {
	tests := []struct {
		typ, opts string
		mkfs      []string
		fix       string
		// needsQuota: the kernel mounts it only when it has quotas.
		needsQuota bool
	}{
		{"ext4", "", nil, "mkfs.ext4 -O quota,project", false},
		{"ext4", "", []string{"-O", "quota,project"}, "accounted but not enforced: mount it with -o prjquota;", true},
		{"xfs", "", nil, "mount the xfs filesystem with -o prjquota", false},
		{"xfs", "uquota", nil, "mount the xfs filesystem with -o prjquota", true},
	}
	for _, tt := range tests {
		t.Run(tt.typ+" "+strings.Join(tt.mkfs, " ")+" -o "+tt.opts, func(t *testing.T) {
			if tt.needsQuota {
				// The host's kernel mounts neither (no CONFIG_QFMT_V2, no
				// CONFIG_XFS_QUOTA); Debian's in the guest does.
				guest.Require(t, "disk quota formats")
			}
			dir := quotatest.Mount(t, tt.typ, tt.opts, tt.mkfs...)
			err := Check(dir, "--root")
			require.ErrorIs(t, err, ErrUnsupported)
			assert.Contains(t, err.Error(), "--root "+dir+" is on "+tt.typ)
			if KernelHasQuotas(dir) {
				assert.Contains(t, err.Error(), tt.fix)
			} else {
				assert.Contains(t, err.Error(), "this kernel has no disk quotas")
			}
			assert.Contains(t, err.Error(), "type=loop")
		})
	}
}
