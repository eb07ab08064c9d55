package nfs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		raw  map[string]string
		want map[string]string
	}{
		{
			name: "docker local form",
			raw:  map[string]string{"o": "addr=10.0.0.5,rw,nfsvers=4.1", "device": ":/export"},
			want: map[string]string{"addr": "10.0.0.5", "device": ":/export", "o": "rw,vers=4.1"},
		},
		{
			name: "docker local form for the test server",
			raw:  map[string]string{"o": "addr=127.0.0.1,vers=3,port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp", "device": ":/"},
			want: map[string]string{"addr": "127.0.0.1", "device": ":/", "o": "port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp,vers=3"},
		},
		{
			name: "share",
			raw:  map[string]string{"share": "NAS.example.com.:/srv/data/"},
			want: map[string]string{"addr": "nas.example.com", "device": ":/srv/data"},
		},
		{
			name: "addr and device",
			raw:  map[string]string{"addr": "nas", "device": ":/srv//data"},
			want: map[string]string{"addr": "nas", "device": ":/srv/data"},
		},
		{
			name: "device with the host in it",
			raw:  map[string]string{"device": "10.0.0.5:/export", "o": "addr=10.0.0.5"},
			want: map[string]string{"addr": "10.0.0.5", "device": ":/export"},
		},
		{
			name: "device as a bare path",
			raw:  map[string]string{"addr": "nas", "device": "/export"},
			want: map[string]string{"addr": "nas", "device": ":/export"},
		},
		{
			name: "ipv6 share",
			raw:  map[string]string{"share": "[2001:DB8:0::5]:/export"},
			want: map[string]string{"addr": "2001:db8::5", "device": ":/export"},
		},
		{
			name: "ipv6 addr in brackets and in o",
			raw:  map[string]string{"addr": "[2001:db8::5]", "o": "addr=2001:db8::5", "device": ":/x"},
			want: map[string]string{"addr": "2001:db8::5", "device": ":/x"},
		},
		{
			name: "ipv4-mapped ipv6 is ipv4",
			raw:  map[string]string{"addr": "::ffff:10.0.0.5", "device": ":/x"},
			want: map[string]string{"addr": "10.0.0.5", "device": ":/x"},
		},
		{
			name: "same server given three ways",
			raw:  map[string]string{"addr": "nas", "share": "NAS:/x", "o": "addr=nas"},
			want: map[string]string{"addr": "nas", "device": ":/x"},
		},
		{
			name: "mount(8)-only words dropped, spaces trimmed",
			raw:  map[string]string{"share": "nas:/x", "o": " defaults , _netdev,x-systemd.automount,,hard "},
			want: map[string]string{"addr": "nas", "device": ":/x", "o": "hard"},
		},
		{
			name: "vers=4 with minorversion",
			raw:  map[string]string{"share": "nas:/x", "o": "vers=4,minorversion=1"},
			want: map[string]string{"addr": "nas", "device": ":/x", "o": "vers=4.1"},
		},
		{
			name: "vers=4 alone negotiates 4.x",
			raw:  map[string]string{"share": "nas:/x", "o": "nfsvers=4"},
			want: map[string]string{"addr": "nas", "device": ":/x", "o": "vers=4"},
		},
		{
			name: "flag words and values kept",
			raw:  map[string]string{"share": "nas:/x", "o": "ro,noexec,soft,timeo=50,retrans=3,sec=krb5p,context=system_u:object_r:nfs_t:s0"},
			want: map[string]string{"addr": "nas", "device": ":/x", "o": "ro,noexec,soft,timeo=50,retrans=3,sec=krb5p,context=system_u:object_r:nfs_t:s0"},
		},
	}
	b := &Backend{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.Parse(tt.raw)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			again, err := b.Parse(got)
			require.NoError(t, err, "the canonical form parses")
			assert.Equal(t, got, again, "the canonical form is its own canonical form")
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name string
		raw  map[string]string
		want string
	}{
		{"uid", map[string]string{"share": "nas:/x", "uid": "1000"}, `invalid option "uid" for type=nfs: NFS keeps ownership on the server; set it there`},
		{"gid", map[string]string{"share": "nas:/x", "gid": "1000"}, "NFS keeps ownership on the server; set it there"},
		{"mode", map[string]string{"share": "nas:/x", "mode": "0755"}, "NFS keeps permissions on the server"},
		{"size", map[string]string{"share": "nas:/x", "size": "1g"}, "set a quota on the server"},
		{"uid in o", map[string]string{"share": "nas:/x", "o": "uid=1000"}, "uid: NFS keeps ownership on the server"},
		{"unknown", map[string]string{"share": "nas:/x", "server": "nas"}, `invalid option "server" for type=nfs: valid options are addr, device, o, share, type`},
		{"addr twice", map[string]string{"addr": "10.0.0.5", "o": "addr=10.0.0.6", "device": ":/x"}, "got the server twice with different values (addr=10.0.0.5, o=addr=10.0.0.6); give it once"},
		{"addr vs share", map[string]string{"addr": "a", "share": "b:/x"}, "got the server twice with different values (addr=a, share=b:/x)"},
		{"addr vs device host", map[string]string{"device": "b:/x", "o": "addr=a"}, "got the server twice"},
		{"share and device", map[string]string{"share": "nas:/x", "device": ":/x"}, "takes share=HOST:/PATH or device=:/PATH (with addr), not both"},
		{"no server", map[string]string{"device": ":/x"}, "needs the server: share=HOST:/PATH, or addr=HOST with device=:/PATH"},
		{"no export", map[string]string{"addr": "nas"}, "needs the export path: share=nas:/PATH"},
		{"relative path", map[string]string{"share": "nas:export"}, "the export path must be absolute"},
		{"unbracketed ipv6 share", map[string]string{"share": "2001:db8::5:/x"}, "write an IPv6 server in brackets"},
		{"bad host", map[string]string{"share": "nas!:/x"}, "is not a valid host name"},
		{"bad ipv4", map[string]string{"addr": "10.0.0.256", "device": ":/x"}, "is not a valid IPv4 address"},
		{"bad addr in o", map[string]string{"device": ":/x", "o": "addr=a b"}, "addr=a b"},
		{"vers 2", map[string]string{"share": "nas:/x", "o": "vers=2"}, "NFSv2 is obsolete"},
		{"vers junk", map[string]string{"share": "nas:/x", "o": "nfsvers=5"}, "want 3, 4, 4.0, 4.1 or 4.2"},
		{"two versions", map[string]string{"share": "nas:/x", "o": "vers=3,nfsvers=4.1"}, "the NFS version is given twice with different values (3, 4.1)"},
		{"minorversion without 4", map[string]string{"share": "nas:/x", "o": "minorversion=1"}, "minorversion needs vers=4"},
		{"bind", map[string]string{"share": "nas:/x", "o": "bind"}, "bind is not an NFS mount option"},
		{"bad port", map[string]string{"share": "nas:/x", "o": "port=nfs"}, "port=nfs: want a port number"},
		{"bad proto", map[string]string{"share": "nas:/x", "o": "proto=sctp"}, "proto=sctp: want tcp, udp or rdma"},
		{"empty key", map[string]string{"share": "nas:/x", "o": "=1"}, `"" is not an option name`},
		{"secret never echoed", map[string]string{"share": "nas:/x", "o": "password=hunter2,uid=1"}, "invalid option o for type=nfs: password: NFS mounts take no key material"},
	}
	b := &Backend{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Parse(tt.raw)
			require.ErrorIs(t, err, driver.ErrInvalidOption)
			assert.ErrorContains(t, err, tt.want)
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestParseNFS4(t *testing.T) {
	b := &Backend{Type: TypeNFS4}
	got, err := b.Parse(map[string]string{"share": "nas:/x"})
	require.NoError(t, err)
	c, err := configOf(TypeNFS4, got)
	require.NoError(t, err)
	assert.Equal(t, []string{"4.2", "4.1", "4.0"}, c.candidates(TypeNFS4))

	_, err = b.Parse(map[string]string{"share": "nas:/x", "o": "vers=3"})
	assert.ErrorContains(t, err, "type=nfs4 mounts NFSv4 only")
	_, err = b.Parse(map[string]string{"share": "nas:/x", "uid": "1"})
	assert.ErrorContains(t, err, `invalid option "uid" for type=nfs4`)
}

func TestCandidates(t *testing.T) {
	tests := []struct {
		o    string
		want []string
	}{
		{"", []string{"4.2", "4.1", "4.0", "3"}},
		{"vers=4", []string{"4.2", "4.1", "4.0"}},
		{"vers=4.0", []string{"4.0"}},
		{"nfsvers=3", []string{"3"}},
	}
	for _, tt := range tests {
		c, err := parse(TypeNFS, map[string]string{"share": "nas:/x", "o": tt.o})
		require.NoError(t, err)
		assert.Equal(t, tt.want, c.candidates(TypeNFS), tt.o)
	}
}

func TestRedactedOptions(t *testing.T) {
	o := optList{{key: "sec", value: "krb5", hasValue: true}, {key: "password", value: "hunter2", hasValue: true}, {key: "hard"}}
	assert.Equal(t, "sec=krb5,password=********,hard", o.redacted())
}

func TestKeyMaterialInORefused(t *testing.T) {
	for _, item := range []string{"password=hunter2", "secret=hunter2", "token=hunter2", "passwd=hunter2"} {
		_, err := parseO("hard," + item)
		require.Error(t, err, item)
		assert.Contains(t, err.Error(), "NFS mounts take no key material")
		assert.NotContains(t, err.Error(), "hunter2")
	}
}
