package crypt

import (
	"os"
	"path/filepath"
	"strings"
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
		{map[string]string{"size": "64m"}, map[string]string{"size": "67108864", "fs": "ext4", "engine": "auto"}, ""},
		{map[string]string{"size": "1g", "fs": "xfs", "engine": "luks", "keyfile": "db.keyfile", "uid": "999", "mode": "700"},
			map[string]string{"size": "1073741824", "fs": "xfs", "engine": "luks", "keyfile": "db.keyfile", "uid": "999", "mode": "0700"}, ""},
		{map[string]string{}, nil, `type=crypt requires option "size"`},
		{map[string]string{"size": "16m"}, nil, "needs at least 32m"},
		{map[string]string{"size": "100m", "fs": "xfs"}, nil, "XFS needs at least 320m"},
		{map[string]string{"size": "1g", "fs": "btrfs"}, nil, `fs="btrfs": want ext4 or xfs`},
		{map[string]string{"size": "1g", "engine": "aes"}, nil, `engine="aes": want auto, luks or fscrypt`},
		{map[string]string{"size": "1g", "fs": "xfs", "engine": "fscrypt"}, nil, "engine=fscrypt works with fs=ext4 only"},
		{map[string]string{"size": "1g", "keyfile": "../etc/shadow"}, nil, "without any /"},
		{map[string]string{"size": "1g", "keyfile": ".."}, nil, "without any /"},
		{map[string]string{"size": "1g", "keyfile": "other.key"}, nil, "reserved for keys holdfast generates"},
		{map[string]string{"size": "1g", "o": "x"}, nil, "valid options are engine, fs, gid, keyfile, mode, size, type, uid"},
		{map[string]string{"size": "1g", "uid": "x"}, nil, `uid="x"`},
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

func TestParseRefusesKeyMaterial(t *testing.T) {
	b := &Backend{}
	for _, name := range []string{"key", "passphrase", "password", "secret", "Key", "luks_key", "token"} {
		_, err := b.Parse(map[string]string{"size": "1g", name: "hunter2hunter2"})
		require.Error(t, err, name)
		assert.ErrorIs(t, err, driver.ErrInvalidOption)
		assert.Contains(t, err.Error(), "docker volume inspect shows every option", name)
		assert.Contains(t, err.Error(), "keyfile=NAME", name)
		assert.NotContains(t, err.Error(), "hunter2", "the value is never echoed")
	}
}

func TestMappingName(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, nil, 0o600))
		return p
	}
	one, two := file("one"), file("two")
	a, err := mappingName("db", one)
	require.NoError(t, err)
	b, err := mappingName("db", two)
	require.NoError(t, err)
	assert.Regexp(t, `^holdfast-db-[0-9a-f]{8}$`, a)
	assert.NotEqual(t, a, b, "same-named volumes of two instances get their own mappings")
	again, err := mappingName("db", one)
	require.NoError(t, err)
	assert.Equal(t, a, again, "stable for one backing file")
	long, err := mappingName("a"+strings.Repeat("b", 254), one)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(long), 127, "device-mapper names are at most 127 bytes")
	_, err = mappingName("db", filepath.Join(dir, "missing"))
	assert.Error(t, err)
}
