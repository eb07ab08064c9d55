package driver

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCommonOptions(t *testing.T) {
	tests := []struct {
		opt, in, want string
		errPart       string
	}{
		{"uid", "1000", "1000", ""},
		{"uid", "0", "0", ""},
		{"uid", "007", "7", ""},
		{"uid", "-1", "", "numeric user id"},
		{"uid", "bob", "", "numeric user id"},
		{"uid", "4294967295", "", "numeric user id"},
		{"gid", "", "", "numeric group id"},
		{"gid", "50", "50", ""},
		{"mode", "0750", "0750", ""},
		{"mode", "750", "0750", ""},
		{"mode", "1770", "1770", ""},
		{"mode", "0", "0000", ""},
		{"mode", "0888", "", "octal mode"},
		{"mode", "17777", "", "octal mode"},
		{"mode", "rwx", "", "octal mode"},
	}
	specs := []Option{OptUID, OptGID, OptMode}
	for _, tt := range tests {
		got, err := ParseOptions("local", map[string]string{tt.opt: tt.in}, specs)
		if tt.errPart == "" {
			require.NoError(t, err, "%s=%q", tt.opt, tt.in)
			assert.Equal(t, tt.want, got[tt.opt])
			continue
		}
		require.Error(t, err, "%s=%q", tt.opt, tt.in)
		assert.ErrorIs(t, err, ErrInvalidOption)
		// The error names the option, the value and the expected form.
		assert.Contains(t, err.Error(), tt.opt+"=")
		assert.Contains(t, err.Error(), `"`+tt.in+`"`)
		assert.Contains(t, err.Error(), tt.errPart)
	}
}

func TestCanonSize(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"512k", "524288", true},
		{"100m", "104857600", true},
		{"1g", "1073741824", true},
		{"1G", "1073741824", true},
		{"8MiB", "8388608", true},
		{"4096", "4096", true},
		{"0", "", false},
		{"-1m", "", false},
		{"lots", "", false},
		{"", "", false},
		{"1x", "", false},
		{"1.5m", "1572864", true},
		{"1 g", "1073741824", true},
		{".5k", "512", true},
		{"8191p", "9222246136947933184", true},
		{"8192p", "", false},
		{"99999999999999999999", "", false},
		{"1e30", "", false},
		{"1e3", "", false},
		{"0x1p4", "", false},
		{"abc", "", false},
		{"-1", "", false},
	}
	for _, tt := range tests {
		got, err := CanonSize(tt.in)
		if !tt.ok {
			assert.Error(t, err, "%q", tt.in)
			continue
		}
		require.NoError(t, err, "%q", tt.in)
		assert.Equal(t, tt.want, got, "%q", tt.in)
	}
}

func TestCanonSizeSaysWhatIsWrong(t *testing.T) {
	tests := []struct{ in, errPart string }{
		{"0", "must be greater than zero"},
		{"0.1", "must be greater than zero"},
		{"8192p", "too large: sizes go up to 8191p"},
		{"99999999999999999999", "too large"},
		{"1e30", "not a size"},
		{"-1", "not a size"},
		{"abc", "not a size"},
		{"1kk", "not a size"},
	}
	for _, tt := range tests {
		_, err := CanonSize(tt.in)
		assert.ErrorContains(t, err, tt.errPart, "%q", tt.in)
	}
}

func TestParseOptionsUnknownAndRequired(t *testing.T) {
	size := Option{Name: "size", Form: "a size", Required: true, Canon: CanonSize}
	_, err := ParseOptions("tmpfs", map[string]string{"colour": "red"}, []Option{size, OptUID})
	require.ErrorIs(t, err, ErrInvalidOption)
	assert.Contains(t, err.Error(), `"colour"`)
	assert.Contains(t, err.Error(), "valid options are size, type, uid")
	assert.NotContains(t, err.Error(), "red", "an unknown option's value is not echoed")

	_, err = ParseOptions("crypt", map[string]string{}, []Option{size})
	require.ErrorIs(t, err, ErrInvalidOption)
	assert.Contains(t, err.Error(), `requires option "size"`)

	def := Option{Name: "size", Form: "a size", Default: "64m", Canon: CanonSize}
	got, err := ParseOptions("tmpfs", nil, []Option{def, OptMode})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"size": "67108864"}, got, "defaults filled in, unset options absent")
}

func TestDiffOptions(t *testing.T) {
	a := map[string]string{"size": "1", "uid": "5", "password": "x"}
	b := map[string]string{"size": "2", "gid": "7", "password": "y"}
	assert.Equal(t, []string{
		`gid: existing unset, requested "7"`,
		`password: existing ********, requested ********`,
		`size: existing "1", requested "2"`,
		`uid: existing "5", requested unset`,
	}, DiffOptions(a, b))
	assert.Empty(t, DiffOptions(a, a))
	assert.Empty(t, DiffOptions(nil, map[string]string{}))
}

func TestDiffOptionsLeftToDefault(t *testing.T) {
	// A requested LeftToDefault matches the value the volume got, or none.
	assert.Empty(t, DiffOptions(map[string]string{"size": "67108864"}, map[string]string{"size": LeftToDefault}))
	assert.Empty(t, DiffOptions(map[string]string{}, map[string]string{"size": LeftToDefault}))
	// Only on the requested side, and only for its own option.
	assert.Equal(t, []string{`size: existing "default", requested "1"`},
		DiffOptions(map[string]string{"size": LeftToDefault}, map[string]string{"size": "1"}))
	assert.Equal(t, []string{`uid: existing "5", requested unset`},
		DiffOptions(map[string]string{"size": "1", "uid": "5"}, map[string]string{"size": LeftToDefault}))

	canon := CanonOrDefault(CanonSize)
	for in, want := range map[string]string{"default": LeftToDefault, "1m": "1048576"} {
		got, err := canon(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := canon("Default")
	assert.Error(t, err)
}

func TestRedact(t *testing.T) {
	in := map[string]string{"type": "crypt", "size": "1g", "keyfile": "db.key", "key": "abc", "Passphrase": "p", "secret_x": "s", "auth_token": "t"}
	got := Redact(in)
	assert.Equal(t, "crypt", got["type"])
	assert.Equal(t, "1g", got["size"])
	assert.Equal(t, "db.key", got["keyfile"], "a key file's name is not secret")
	for _, k := range []string{"key", "Passphrase", "secret_x", "auth_token"} {
		assert.Equal(t, "********", got[k], k)
	}
	assert.Equal(t, "abc", in["key"], "input untouched")

	got = Redact(map[string]string{"o": "addr=nas,password=hunter2, token = t,vers=4", "share": "nas:/x"})
	assert.Equal(t, "addr=nas,password=********, token =********,vers=4", got["o"], "inside mount option lists too")
	assert.Equal(t, "nas:/x", got["share"])
}
