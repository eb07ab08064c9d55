package loop

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
)

func TestParse(t *testing.T) {
	b := &Backend{}
	tests := []struct {
		opts    map[string]string
		want    map[string]string
		errPart string
	}{
		{map[string]string{"size": "64m"}, map[string]string{"size": "67108864", "fs": "ext4"}, ""},
		{map[string]string{"size": "16m"}, map[string]string{"size": "16777216", "fs": "ext4"}, ""},
		{map[string]string{"size": "10g", "fs": "xfs", "uid": "999", "gid": "998", "mode": "700"},
			map[string]string{"size": "10737418240", "fs": "xfs", "uid": "999", "gid": "998", "mode": "0700"}, ""},
		{map[string]string{"size": "300m", "fs": "xfs"}, map[string]string{"size": "314572800", "fs": "xfs"}, ""},
		{map[string]string{}, nil, `type=loop requires option "size"`},
		{map[string]string{"fs": "xfs"}, nil, `type=loop requires option "size"`},
		{map[string]string{"size": "big"}, nil, `size="big"`},
		{map[string]string{"size": "0"}, nil, "must be greater than zero"},
		{map[string]string{"size": "15m"}, nil, "a loop volume needs at least 16m"},
		{map[string]string{"size": "299m", "fs": "xfs"}, nil, "an xfs filesystem needs at least 300m"},
		{map[string]string{"size": "1g", "fs": "btrfs"}, nil, `fs="btrfs": want ext4 or xfs`},
		{map[string]string{"size": "1g", "uid": "x"}, nil, `uid="x"`},
		{map[string]string{"size": "1g", "gid": "-1"}, nil, `gid="-1"`},
		{map[string]string{"size": "1g", "mode": "0999"}, nil, `mode="0999"`},
		{map[string]string{"size": "1g", "engine": "luks"}, nil, `invalid option "engine" for type=loop: valid options are fs, gid, mode, size, type, uid`},
		{map[string]string{"size": "1g", "o": "size=1g"}, nil, `invalid option "o" for type=loop`},
	}
	for _, tt := range tests {
		got, err := b.Parse(tt.opts)
		if tt.errPart == "" {
			require.NoError(t, err, "%v", tt.opts)
			assert.Equal(t, tt.want, got)
			continue
		}
		require.Error(t, err, "%v", tt.opts)
		assert.ErrorIs(t, err, driver.ErrInvalidOption)
		assert.Contains(t, err.Error(), tt.errPart, "%v", tt.opts)
	}
}
