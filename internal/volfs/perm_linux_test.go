package volfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// TestCheckPrivateDirModes: group or other bits of any kind are removed;
// 0700 and tighter are left as they are.
func TestCheckPrivateDirModes(t *testing.T) {
	for _, tc := range []struct{ mode, want os.FileMode }{
		{0o755, 0o700}, {0o711, 0o700}, {0o750, 0o700}, {0o701, 0o700}, {0o777, 0o700},
		{0o700, 0o700}, {0o500, 0o500},
	} {
		t.Run(fmt.Sprintf("%04o", tc.mode), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			require.NoError(t, os.Mkdir(dir, 0o700))
			require.NoError(t, os.Chmod(dir, tc.mode))
			log, hook := test.NewNullLogger()
			exists, err := CheckPrivateDir(dir, "--root", log)
			require.NoError(t, err)
			assert.True(t, exists)
			assert.Equal(t, tc.want, volfstest.Mode(t, dir))
			assert.Equal(t, tc.mode != tc.want, len(volfstest.ModeCorrections(hook)) == 1, "warned")
		})
	}
}

func TestCheckPrivateDirMissing(t *testing.T) {
	exists, err := CheckPrivateDir(filepath.Join(t.TempDir(), "none"), "--key-dir", nil)
	require.NoError(t, err)
	assert.False(t, exists)
}

func TestCheckPrivateDirNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err := CheckPrivateDir(file, "--mount-root", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--mount-root "+file+" is not a directory")
}
