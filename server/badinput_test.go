package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/nfs"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
)

// secret is the key material the key-material cases send; it must never
// come back in an answer or reach the log.
const secret = "hunter2-0f1e2d3c4b5a69788796a5b4c3d2e1f0"

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// realPlugin is holdfast as cmd/holdfast wires it, on real mounts, in
// temporary directories.
type realPlugin struct {
	t                 *testing.T
	root, mnt, keyDir string
	client            *http.Client
	logs              *syncBuffer
}

func startReal(t *testing.T) *realPlugin {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the crypt backend attaches loop devices and mounts filesystems (make test runs as root)")
	}
	dir := t.TempDir()
	p := &realPlugin{t: t, root: filepath.Join(dir, "root"), mnt: filepath.Join(dir, "mnt"),
		keyDir: filepath.Join(dir, "keys"), logs: &syncBuffer{}}
	log := logrus.New()
	log.SetOutput(p.logs)
	log.SetLevel(logrus.DebugLevel)
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: p.root, MountRoot: p.mnt, Scope: "local", BootID: "b", Mounter: m, Log: log,
		Backends: map[string]driver.Backend{
			"local":      &local.Backend{Mounter: m},
			"tmpfs":      &tmpfs.Backend{Mounter: m, DefaultSize: "64m"},
			"crypt":      &crypt.Backend{Mounter: m, KeyDir: p.keyDir},
			nfs.TypeNFS:  nfs.New(m, time.Second, log),
			nfs.TypeNFS4: &nfs.Backend{Mounter: m, Timeout: time.Second, Type: nfs.TypeNFS4, Log: log},
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	sock := filepath.Join(dir, "holdfast.sock")
	l, err := Listen(sock, os.Getgid())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, Instrument(d, log)) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	p.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}, Timeout: time.Minute}
	return p
}

// post sends body to path as dockerd does and returns the status and the
// raw answer.
func (p *realPlugin) post(method, path, body string) (int, []byte) {
	p.t.Helper()
	req, err := http.NewRequest(method, "http://plugin"+path, strings.NewReader(body))
	require.NoError(p.t, err)
	req.Header.Set("Content-Type", contentType)
	res, err := p.client.Do(req)
	require.NoError(p.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(p.t, err)
	return res.StatusCode, raw
}

// ok sends a request that must succeed.
func (p *realPlugin) ok(path, body string) []byte {
	p.t.Helper()
	code, raw := p.post(http.MethodPost, path, body)
	require.Equal(p.t, http.StatusOK, code, "%s %s: %s", path, body, raw)
	return raw
}

// state is what a refused request must leave unchanged.
type state struct {
	db                    []byte
	list                  string
	volumes, mounts, keys []string
}

func (p *realPlugin) state() state {
	p.t.Helper()
	db, err := os.ReadFile(filepath.Join(p.root, "holdfast.db"))
	require.NoError(p.t, err)
	return state{db: db, list: string(p.ok("/VolumeDriver.List", "")),
		volumes: p.entries(filepath.Join(p.root, "volumes")), mounts: p.entries(p.mnt), keys: p.entries(p.keyDir)}
}

func (p *realPlugin) entries(dir string) []string {
	p.t.Helper()
	des, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(p.t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func create(name string, opts map[string]string) string {
	b, _ := json.Marshal(map[string]any{"Name": name, "Opts": opts})
	return string(b)
}

type opts = map[string]string

const (
	createPath = "/VolumeDriver.Create"
	mountPath  = "/VolumeDriver.Mount"
)

// badInputCase is a request holdfast must refuse without changing anything.
type badInputCase struct {
	name, method, path, body string
	errPart                  string // the answer's Err contains this
	secret                   bool   // the body carries secret, which must not come back
}

func badInputCases() []badInputCase {
	key := func(typ, k string) opts {
		o := opts{"type": typ, k: secret}
		switch typ {
		case "crypt":
			o["size"] = "64m"
		case "nfs":
			o["share"] = "nas:/export"
		}
		return o
	}
	long := strings.Repeat("a", driver.MaxNameLen+1)
	return []badInputCase{
		// The request itself: answered by the decoder. Unknown fields are not
		// here: they are ignored (TestUnknownFieldsAreIgnored).
		{name: "invalid JSON", body: `{not json`, errPart: "request body is not valid JSON"},
		{name: "JSON cut short", body: `{"Name":"new1","Opts":{"type":"tmpfs"`, errPart: "not valid JSON: it ends at byte"},
		{name: "trailing data", body: `{"Name":"new1"} {"Name":"new2"}`, errPart: "unexpected data after the JSON value"},
		{name: "empty body", body: ``, errPart: "empty request body: VolumeDriver.Create takes a JSON object"},
		{name: "body is a list", body: `["new1"]`, errPart: "request body is a list, not an object"},
		{name: "body not UTF-8", body: "{\"Name\":\"new\xff\"}", errPart: "not valid UTF-8"},
		{name: "name is a number", body: `{"Name":42}`, errPart: `field "Name" must be a string, not a number`},
		{name: "opts is a list", body: `{"Name":"new1","Opts":["size=1m"]}`, errPart: `field "Opts" must be an object of string values`},
		{name: "option value is a number", body: `{"Name":"new1","Opts":{"type":"tmpfs","size":1048576}}`, errPart: `option "size" must have a string value, not a number`},
		{name: "option value is a boolean", body: `{"Name":"new1","Opts":{"uid":true}}`, errPart: `option "uid" must have a string value, not a boolean`},
		{name: "ID is a number", path: mountPath, body: `{"Name":"data","ID":123}`, errPart: `field "ID" must be a string, not a number`},
		{name: "field in lower case", body: `{"name":"new1"}`, errPart: `field names are case-sensitive: write "Name"`},
		{name: "field twice", body: `{"Name":"new1","Name":"new2"}`, errPart: `field "Name" is given twice`},
		{name: "option twice", body: `{"Name":"new1","Opts":{"type":"tmpfs","size":"1m","size":"2m"}}`, errPart: `option "size" is given twice`},
		{name: "huge body", body: `{"Name":"` + strings.Repeat("x", 2<<20) + `"}`, errPart: "larger than the limit of 1 MiB"},
		{name: "NUL in name", body: `{"Name":"new\u00001"}`, errPart: `field "Name" contains the control character U+0000`},
		{name: "NUL in mount ID", path: mountPath, body: `{"Name":"data","ID":"0123\u0000"}`, errPart: `field "ID" contains the control character U+0000`},
		{name: "newline in option value", body: create("new1", opts{"uid": "1000\n"}), errPart: `the value of option "uid" contains the control character U+000A`},
		{name: "control character in option name", body: create("new1", opts{"u\x1bid": "1000"}), errPart: `option name "u\x1bid" contains the control character U+001B`},
		{name: "NUL in secret value", body: create("new1", opts{"type": "crypt", "size": "64m", "key": secret + "\x00"}), errPart: `the value of option "key" contains the control character`, secret: true},
		{name: "secret as a number", body: `{"Name":"new1","Opts":{"type":"crypt","passphrase":["` + secret + `"]}}`, errPart: `option "passphrase" must have a string value, not a list`, secret: true},
		{name: "unknown endpoint", path: "/VolumeDriver.Snapshot", body: `{"Name":"data"}`, errPart: `unknown endpoint "/VolumeDriver.Snapshot"`},
		{name: "GET instead of POST", method: http.MethodGet, path: "/VolumeDriver.List", errPart: "plugin requests are POST"},

		// Names: answered by the driver.
		{name: "traversal ../x", body: create("../x", nil), errPart: "names must be at least 2 characters of [a-zA-Z0-9_.-]"},
		{name: "traversal a/b", body: create("a/b", nil), errPart: "names must be"},
		{name: "name .", body: create(".", nil), errPart: "names must be"},
		{name: "name ..", body: create("..", nil), errPart: "names must be"},
		{name: "remove ../data", path: "/VolumeDriver.Remove", body: `{"Name":"../data"}`, errPart: "names must be"},
		{name: "mount ../../etc", path: mountPath, body: `{"Name":"../../etc","ID":"0123abcd"}`, errPart: "names must be"},
		{name: "path ..", path: "/VolumeDriver.Path", body: `{"Name":".."}`, errPart: "names must be"},
		{name: "empty name", body: create("", opts{"type": "tmpfs"}), errPart: `invalid volume name "": names must be`},
		{name: "no name", path: "/VolumeDriver.Get", body: `{}`, errPart: `invalid volume name ""`},
		{name: "name over 255 bytes", body: create(long, nil), errPart: "256 bytes is longer than 255"},

		// Sizes.
		{name: "tmpfs size=0", body: create("new1", opts{"type": "tmpfs", "size": "0"}), errPart: `size="0": want a size such as 512k, 100m or 1g: must be greater than zero`},
		{name: "tmpfs size=-1", body: create("new1", opts{"type": "tmpfs", "size": "-1"}), errPart: `size="-1": want a size such as 512k, 100m or 1g: not a size`},
		{name: "tmpfs size=1e30", body: create("new1", opts{"type": "tmpfs", "size": "1e30"}), errPart: `size="1e30": want a size such as 512k, 100m or 1g: not a size`},
		{name: "tmpfs size=abc", body: create("new1", opts{"type": "tmpfs", "size": "abc"}), errPart: `size="abc": want a size`},
		{name: "tmpfs size overflows", body: create("new1", opts{"type": "tmpfs", "size": "99999999999999999999"}), errPart: "too large: sizes go up to 8191p"},
		{name: "local size= without project quotas", body: create("new1", opts{"size": "64m"}), errPart: `size= (64.0 MiB) for type=local is a project quota on the volume's directory: no project quotas: --root `},
		{name: "local size= points to loop", body: create("new1", opts{"type": "local", "size": "1g"}), errPart: `or use type=loop size=… for a size-limited volume`},
		{name: "local size too small", body: create("new1", opts{"size": "100k"}), errPart: `size="100k": want a size of at least 1m such as 100m or 1g: smaller than 1m`},
		{name: "local size=0", body: create("new1", opts{"size": "0"}), errPart: `size="0": want a size of at least 1m`},
		{name: "crypt size=0", body: create("new1", opts{"type": "crypt", "size": "0"}), errPart: `size="0": want a size of at least 32m`},
		{name: "crypt size=-1", body: create("new1", opts{"type": "crypt", "size": "-1"}), errPart: `size="-1": want a size of at least 32m such as 512m or 10g: not a size`},
		{name: "crypt size=1e30", body: create("new1", opts{"type": "crypt", "size": "1e30"}), errPart: `size="1e30": want a size of at least 32m`},
		{name: "crypt size=abc", body: create("new1", opts{"type": "crypt", "size": "abc"}), errPart: `size="abc": want a size of at least 32m`},
		{name: "crypt size overflows", body: create("new1", opts{"type": "crypt", "size": "9000p"}), errPart: "too large"},
		{name: "crypt without size", body: create("new1", opts{"type": "crypt"}), errPart: `type=crypt requires option "size"`},
		{name: "crypt too small", body: create("new1", opts{"type": "crypt", "size": "16m"}), errPart: "a crypt volume needs at least 32m"},
		{name: "crypt xfs too small", body: create("new1", opts{"type": "crypt", "size": "100m", "fs": "xfs"}), errPart: "XFS needs at least 320m"},

		// Conflicts.
		{name: "crypt fs=xfs engine=fscrypt", body: create("new1", opts{"type": "crypt", "size": "1g", "fs": "xfs", "engine": "fscrypt"}), errPart: "engine=fscrypt works with fs=ext4 only"},
		{name: "tmpfs again with another size", body: create("web", opts{"type": "tmpfs", "size": "2m"}), errPart: `volume web exists with other options (size: existing "1048576", requested "2097152"); nothing was changed`},
		{name: "local again as tmpfs", body: create("data", opts{"type": "tmpfs"}), errPart: "volume data exists with type=local, not type=tmpfs"},
		{name: "local again with another uid", body: create("data", opts{"uid": "1001"}), errPart: `uid: existing "1000", requested "1001"`},
		{name: "crypt again with another size", body: create("vault", opts{"type": "crypt", "size": "64m"}), errPart: "volume vault exists with other options"},
		{name: "nfs share and device", body: create("new1", opts{"type": "nfs", "share": "nas:/x", "device": ":/x"}), errPart: "not both"},

		// Types and options.
		{name: "unknown type", body: create("new1", opts{"type": "zfs"}), errPart: `type=zfs: holdfast does not mount block devices or arbitrary filesystems; use --driver local`},
		{name: "empty type", body: create("new1", opts{"type": ""}), errPart: `unknown volume type "": known types are`},
		{name: "unknown option for local", body: create("new1", opts{"colour": "red"}), errPart: `invalid option "colour" for type=local: valid options are gid, mode, size, type, uid`},
		{name: "unknown word in o for tmpfs", body: create("new1", opts{"type": "tmpfs", "o": "size=1m,huge=always"}), errPart: `huge`},
		{name: "size twice in tmpfs", body: create("new1", opts{"type": "tmpfs", "size": "2m", "o": "size=1m"}), errPart: `twice`},
		{name: "crypt keyfile outside key dir", body: create("new1", opts{"type": "crypt", "size": "64m", "keyfile": "../../etc/shadow"}), errPart: "a file name inside --key-dir, without any /"},
		{name: "crypt keyfile .key", body: create("new1", opts{"type": "crypt", "size": "64m", "keyfile": "vault.key"}), errPart: "reserved for keys holdfast generates"},

		// Key material.
		{name: "crypt key=", body: create("new1", key("crypt", "key")), errPart: `invalid option "key": key material never goes in an option`, secret: true},
		{name: "crypt passphrase=", body: create("new1", key("crypt", "passphrase")), errPart: "put the key (64 random bytes) in a file in the key directory and pass keyfile=NAME", secret: true},
		{name: "crypt password=", body: create("new1", key("crypt", "password")), errPart: `invalid option "password": key material`, secret: true},
		{name: "crypt secret=", body: create("new1", key("crypt", "secret")), errPart: `invalid option "secret": key material`, secret: true},
		{name: "local password=", body: create("new1", key("local", "password")), errPart: `invalid option "password" for type=local`, secret: true},
		{name: "tmpfs key=", body: create("new1", key("tmpfs", "key")), errPart: `invalid option "key" for type=tmpfs`, secret: true},
		{name: "nfs secret=", body: create("new1", key("nfs", "secret")), errPart: `invalid option "secret" for type=nfs: valid options are addr, device, o, share, type`, secret: true},
		{name: "nfs o=password=", body: create("new1", opts{"type": "nfs", "share": "127.0.0.1:/x", "o": "hard,password=" + secret}), errPart: "password: NFS mounts take no key material", secret: true},
		{name: "key in an existing volume's options", body: create("vault", opts{"type": "crypt", "size": "32m", "passphrase": secret}), errPart: "key material never goes in an option", secret: true},

		// Mount IDs and ownership.
		{name: "mount without ID", path: mountPath, body: `{"Name":"data"}`, errPart: "mount data: a mount ID is required"},
		{name: "mount with empty ID", path: mountPath, body: `{"Name":"data","ID":""}`, errPart: "a mount ID is required"},
		{name: "mount unknown volume", path: mountPath, body: `{"Name":"nope","ID":"0123abcd"}`, errPart: "no such volume: nope"},
		{name: "unmount unknown volume", path: "/VolumeDriver.Unmount", body: `{"Name":"nope","ID":"0123abcd"}`, errPart: "no such volume: nope"},
		{name: "remove unknown volume", path: "/VolumeDriver.Remove", body: `{"Name":"nope"}`, errPart: "no such volume: nope"},
		{name: "uid=-1", body: create("new1", opts{"uid": "-1"}), errPart: `uid="-1": want a numeric user id such as 1000`},
		{name: "uid=2^32-1", body: create("new1", opts{"type": "tmpfs", "uid": "4294967295"}), errPart: "not a number from 0 to 4294967294"},
		{name: "gid too big", body: create("new1", opts{"type": "crypt", "size": "64m", "gid": "99999999999"}), errPart: `gid="99999999999": want a numeric group id`},
		{name: "mode not octal", body: create("new1", opts{"mode": "0999"}), errPart: `mode="0999": want an octal mode such as 0750 or 1770`},
		{name: "mode too big", body: create("new1", opts{"type": "tmpfs", "mode": "17777"}), errPart: "not an octal number from 0 to 7777"},

		// NFS.
		{name: "nfs without a share", body: create("new1", opts{"type": "nfs", "o": "vers=4"}), errPart: "type=nfs needs the server: share=HOST:/PATH"},
		{name: "nfs4 without a share", body: create("new1", opts{"type": "nfs4"}), errPart: "type=nfs4 needs the server"},
		{name: "nfs share without a path", body: create("new1", opts{"type": "nfs", "share": "nas"}), errPart: "no export path: write host:/path"},
		{name: "nfs with uid", body: create("new1", opts{"type": "nfs", "share": "nas:/x", "uid": "1000"}), errPart: "NFS keeps ownership on the server; set it there"},
		{name: "nfs4 with vers=3", body: create("new1", opts{"type": "nfs4", "share": "nas:/x", "o": "vers=3"}), errPart: "type=nfs4 mounts NFSv4 only"},
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	p := startReal(t)
	p.ok(createPath, create("data", opts{"uid": "1000"}))
	p.ok(createPath, create("web", opts{"type": "tmpfs", "size": "1m"}))
	p.ok(createPath, create("vault", opts{"type": "crypt", "size": "32m"}))
	t.Cleanup(func() {
		for _, name := range []string{"data", "web", "vault"} {
			p.ok("/VolumeDriver.Remove", `{"Name":"`+name+`"}`)
		}
	})
	before := p.state()
	require.Len(t, before.volumes, 3)

	cases := badInputCases()
	require.GreaterOrEqual(t, len(cases), 40)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.t = t
			if tc.method == "" {
				tc.method = http.MethodPost
			}
			if tc.path == "" {
				tc.path = createPath
			}
			code, raw := p.post(tc.method, tc.path, tc.body)
			assert.NotEqual(t, http.StatusOK, code, "dockerd reads Err only from an answer that is not 200")
			var answer map[string]any
			require.NoError(t, json.Unmarshal(raw, &answer), "the answer is JSON: %q", raw)
			require.Len(t, answer, 1, "the answer is {\"Err\": ...} alone: %s", raw)
			msg, _ := answer["Err"].(string)
			require.NotEmpty(t, msg, "%s", raw)
			assert.Contains(t, msg, tc.errPart)
			if tc.secret {
				assert.NotContains(t, msg, secret[:8], "the answer never echoes key material")
			}
			after := p.state()
			assert.Equal(t, before.db, after.db, "%s: holdfast.db changed", tc.name)
			assert.JSONEq(t, before.list, after.list)
			assert.Equal(t, before.volumes, after.volumes)
			assert.Equal(t, before.mounts, after.mounts)
			assert.Equal(t, before.keys, after.keys)
		})
	}
	p.t = t
	assert.NotContains(t, p.logs.String(), secret[:8], "key material never reaches the log")
	assert.Contains(t, p.logs.String(), "request rejected")
}

// TestUnknownFieldsAreIgnored sends requests with fields a later dockerd
// might add: they succeed, reach the driver with the fields holdfast
// knows, and the log names the unknown fields but never their values.
func TestUnknownFieldsAreIgnored(t *testing.T) {
	p := startReal(t)
	p.ok(createPath, `{"Name":"extra","Opts":{"type":"tmpfs","size":"1m"},"Labels":{"token":"`+secret+`"}}`)
	t.Cleanup(func() { p.ok("/VolumeDriver.Remove", `{"Name":"extra","Hint":1}`) })

	var mnt struct{ Mountpoint string }
	require.NoError(t, json.Unmarshal(p.ok(mountPath, `{"Name":"extra","ID":"0123abcd","Future":"`+secret+`"}`), &mnt))
	assert.Equal(t, filepath.Join(p.mnt, "extra"), mnt.Mountpoint)
	var got struct {
		Volume struct{ Status map[string]any }
	}
	require.NoError(t, json.Unmarshal(p.ok("/VolumeDriver.Get", `{"Name":"extra"}`), &got))
	assert.Equal(t, "tmpfs", got.Volume.Status["type"], "Create's options reached the driver")
	assert.EqualValues(t, 1, got.Volume.Status["leases"], "Mount reached the driver with its Name and ID")
	p.ok("/VolumeDriver.Unmount", `{"Name":"extra","ID":"0123abcd","Future":["x"]}`)
	require.NoError(t, json.Unmarshal(p.ok("/VolumeDriver.Get", `{"Name":"extra"}`), &got))
	assert.EqualValues(t, 0, got.Volume.Status["leases"], "Unmount released the lease of that ID")

	logs := p.logs.String()
	assert.Contains(t, logs, `msg="unknown request fields ignored" endpoint=VolumeDriver.Create fields="\"Labels\""`)
	assert.Contains(t, logs, `endpoint=VolumeDriver.Mount fields="\"Future\""`)
	assert.NotContains(t, logs, secret[:8], "values of unknown fields never reach the log")
	assert.NotContains(t, logs, "request rejected")
}
