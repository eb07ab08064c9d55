package nfs

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestAttempt(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.0.5")
	v6 := netip.MustParseAddr("2001:db8::5")
	tests := []struct {
		name    string
		raw     map[string]string
		version string
		addr    netip.Addr
		source  string
		flags   uintptr
		data    string
		words   string
	}{
		{
			name:    "v3 ipv4, docker local form",
			raw:     map[string]string{"o": "addr=10.0.0.5,vers=3,port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp", "device": ":/"},
			version: "3", addr: v4,
			source: "10.0.0.5:/",
			flags:  unix.MS_NOSUID | unix.MS_NODEV,
			data:   "port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp,vers=3,addr=10.0.0.5",
			words:  "rw,nosuid,nodev",
		},
		{
			name:    "v4.2 host name resolved to ipv4",
			raw:     map[string]string{"share": "nas.example.com:/export", "o": "rw,hard"},
			version: "4.2", addr: v4,
			source: "nas.example.com:/export",
			flags:  unix.MS_NOSUID | unix.MS_NODEV,
			data:   "hard,vers=4.2,addr=10.0.0.5",
			words:  "rw,nosuid,nodev",
		},
		{
			name:    "v4.1 ipv6 literal",
			raw:     map[string]string{"share": "[2001:db8::5]:/export"},
			version: "4.1", addr: v6,
			source: "[2001:db8::5]:/export",
			flags:  unix.MS_NOSUID | unix.MS_NODEV,
			data:   "vers=4.1,addr=2001:db8::5",
			words:  "rw,nosuid,nodev",
		},
		{
			name:    "v3 host name resolved to ipv6: proto follows the family",
			raw:     map[string]string{"share": "nas:/export", "o": "proto=tcp,mountproto=udp"},
			version: "3", addr: v6,
			source: "nas:/export",
			flags:  unix.MS_NOSUID | unix.MS_NODEV,
			data:   "proto=tcp6,mountproto=udp6,vers=3,addr=2001:db8::5",
			words:  "rw,nosuid,nodev",
		},
		{
			name:    "tcp6 given, ipv4 resolved",
			raw:     map[string]string{"share": "nas:/export", "o": "proto=tcp6"},
			version: "4.0", addr: v4,
			source: "nas:/export",
			flags:  unix.MS_NOSUID | unix.MS_NODEV,
			data:   "proto=tcp,vers=4.0,addr=10.0.0.5",
			words:  "rw,nosuid,nodev",
		},
		{
			name:    "flag words become flags, in order",
			raw:     map[string]string{"share": "nas:/export", "o": "ro,suid,noexec,rw,ro,noatime,soft,timeo=100"},
			version: "3", addr: v4,
			source: "nas:/export",
			flags:  unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME,
			data:   "soft,timeo=100,vers=3,addr=10.0.0.5",
			words:  "ro,nodev,noexec,noatime",
		},
		{
			name:    "link-local ipv6 with zone",
			raw:     map[string]string{"share": "nas:/export"},
			version: "4.2", addr: netip.MustParseAddr("fe80::1%eth0"),
			source: "nas:/export",
			flags:  unix.MS_NOSUID | unix.MS_NODEV,
			data:   "vers=4.2,addr=fe80::1%eth0",
			words:  "rw,nosuid,nodev",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(TypeNFS, tt.raw)
			require.NoError(t, err)
			a := c.attempt(tt.version, tt.addr)
			assert.Equal(t, tt.source, a.source)
			assert.Equal(t, tt.flags, a.flags)
			assert.Equal(t, tt.data, a.data)
			assert.Equal(t, tt.words+","+tt.data, a.describe())
		})
	}
}

func TestAttemptPort(t *testing.T) {
	c, err := parse(TypeNFS, map[string]string{"share": "nas:/x"})
	require.NoError(t, err)
	a := c.attempt("3", netip.MustParseAddr("10.0.0.5"))
	assert.Equal(t, "2049", a.port)
	assert.Empty(t, a.explicitPort)

	c, err = parse(TypeNFS, map[string]string{"share": "nas:/x", "o": "port=2050"})
	require.NoError(t, err)
	a = c.attempt("3", netip.MustParseAddr("10.0.0.5"))
	assert.Equal(t, "2050", a.port)
	assert.Equal(t, "2050", a.explicitPort)
}
