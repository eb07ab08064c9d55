package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeRequestAccepts(t *testing.T) {
	tests := []struct {
		path, body string
		want       any
	}{
		// What dockerd sends.
		{"/Plugin.Activate", "", struct{}{}},
		{"/Plugin.Activate", "null\n", struct{}{}},
		{"/VolumeDriver.Capabilities", "{}\n", struct{}{}},
		{"/VolumeDriver.List", " ", struct{}{}},
		{"/VolumeDriver.Create", `{"Name":"db","Opts":{"type":"tmpfs","size":"1m"}}` + "\n",
			&volume.CreateRequest{Name: "db", Options: map[string]string{"type": "tmpfs", "size": "1m"}}},
		{"/VolumeDriver.Create", `{"Name":"db","Opts":null}`, &volume.CreateRequest{Name: "db"}},
		{"/VolumeDriver.Create", `{"Name":"db","Opts":{}}`, &volume.CreateRequest{Name: "db"}},
		{"/VolumeDriver.Create", `{"Name":"db"}`, &volume.CreateRequest{Name: "db"}},
		{"/VolumeDriver.Mount", `{"Name":"db","ID":"0123abcd"}`, &volume.MountRequest{Name: "db", ID: "0123abcd"}},
		{"/VolumeDriver.Unmount", `{"Name":"db","ID":"0123abcd"}`, &volume.UnmountRequest{Name: "db", ID: "0123abcd"}},
		{"/VolumeDriver.Remove", `{"Name":"db"}`, &volume.RemoveRequest{Name: "db"}},
		{"/VolumeDriver.Path", `{"Name":"db"}`, &volume.PathRequest{Name: "db"}},
		{"/VolumeDriver.Get", `{"Name":"db"}`, &volume.GetRequest{Name: "db"}},
		// Left to the driver, which says what is wrong.
		{"/VolumeDriver.Mount", `{"Name":"db"}`, &volume.MountRequest{Name: "db"}},
		{"/VolumeDriver.Create", `{"Opts":{"":""}}`, &volume.CreateRequest{Options: map[string]string{"": ""}}},
		// Escapes and non-ASCII text are fine.
		{"/VolumeDriver.Get", `{"N\u0061me":"caf\u00e9"}`, &volume.GetRequest{Name: "café"}},
	}
	for _, tt := range tests {
		got, _, err := decodeRequest(tt.path, []byte(tt.body))
		require.NoError(t, err, "%s %q", tt.path, tt.body)
		assert.Equal(t, tt.want, got, "%s %q", tt.path, tt.body)
	}
}

func TestDecodeRequestIgnoresUnknownFields(t *testing.T) {
	tests := []struct {
		path, body string
		want       any
		ignored    []string
	}{
		{"/VolumeDriver.Mount", `{"Name":"db","ID":"0123abcd","Future":{"nested":[1,null]}}`,
			&volume.MountRequest{Name: "db", ID: "0123abcd"}, []string{"Future"}},
		{"/VolumeDriver.Unmount", `{"Zone":null,"Name":"db","ID":"0123abcd"}`,
			&volume.UnmountRequest{Name: "db", ID: "0123abcd"}, []string{"Zone"}},
		{"/VolumeDriver.Create", `{"Name":"db","Size":"1g","Opts":{"type":"tmpfs"},"Labels":{"a":"b"}}`,
			&volume.CreateRequest{Name: "db", Options: map[string]string{"type": "tmpfs"}}, []string{"Labels", "Size"}},
		{"/VolumeDriver.Get", `{"Name":"db","Names":5}`, &volume.GetRequest{Name: "db"}, []string{"Names"}},
		{"/VolumeDriver.List", `{"Name":"db"}`, struct{}{}, []string{"Name"}},
		{"/VolumeDriver.Capabilities", `{"All":true}`, struct{}{}, []string{"All"}},
		// An unknown field may hold anything valid, even control characters.
		{"/VolumeDriver.Remove", `{"Name":"db","X":"\u0000"}`, &volume.RemoveRequest{Name: "db"}, []string{"X"}},
	}
	for _, tt := range tests {
		got, ignored, err := decodeRequest(tt.path, []byte(tt.body))
		require.NoError(t, err, "%s %q", tt.path, tt.body)
		assert.Equal(t, tt.want, got, "%s %q", tt.path, tt.body)
		assert.Equal(t, tt.ignored, ignored, "%s %q", tt.path, tt.body)
	}
	_, ignored, err := decodeRequest("/VolumeDriver.Get", []byte(`{"Name":"db"}`))
	require.NoError(t, err)
	assert.Empty(t, ignored)
}

func TestDecodeRequestRejects(t *testing.T) {
	tests := []struct {
		name, path, body string
		status           int
		errPart          string
	}{
		{"unknown endpoint", "/VolumeDriver.Snapshot", `{}`, 404, "unknown endpoint \"/VolumeDriver.Snapshot\": holdfast answers Plugin.Activate"},
		{"empty", "/VolumeDriver.Create", ``, 400, `empty request body: VolumeDriver.Create takes a JSON object such as {"Name": "vol"`},
		{"null", "/VolumeDriver.Get", `null`, 400, `request body is null, not an object`},
		{"list", "/VolumeDriver.Create", `[]`, 400, "request body is a list, not an object"},
		{"string", "/VolumeDriver.Remove", `"db"`, 400, "request body is a string, not an object"},
		{"not json", "/VolumeDriver.Create", `{not json`, 400, "not valid JSON: invalid character 'n'"},
		{"cut short", "/VolumeDriver.Create", `{"Name":"db"`, 400, "not valid JSON: it ends at byte"},
		{"trailing comma", "/VolumeDriver.Create", `{"Name":"db",}`, 400, "not valid JSON"},
		{"trailing object", "/VolumeDriver.Create", `{"Name":"db"}{"Name":"x"}`, 400, "unexpected data after the JSON value at byte 13: send one JSON object per request"},
		{"trailing garbage", "/VolumeDriver.List", `{} x`, 400, "unexpected data after the JSON value"},
		{"not utf-8", "/VolumeDriver.Get", "{\"Name\":\"d\xffb\"}", 400, "not valid UTF-8 (at byte 10)"},
		{"field case", "/VolumeDriver.Create", `{"name":"db"}`, 400, `field names are case-sensitive: write "Name"`},
		{"option case", "/VolumeDriver.Create", `{"Name":"db","opts":{}}`, 400, `write "Opts"`},
		{"field twice", "/VolumeDriver.Create", `{"Name":"db","Name":"x"}`, 400, `field "Name" is given twice`},
		{"field twice, escaped", "/VolumeDriver.Get", `{"Name":"db","N\u0061me":"x"}`, 400, `field "Name" is given twice`},
		{"unknown field twice", "/VolumeDriver.Mount", `{"Name":"db","ID":"a","X":1,"X":2}`, 400, `field "X" is given twice`},
		{"field in upper case", "/VolumeDriver.Get", `{"NAME":"db"}`, 400, `unknown field "NAME": VolumeDriver.Get takes only Name, e.g. {"Name": "vol"} (field names are case-sensitive: write "Name")`},
		{"field case next to the field", "/VolumeDriver.Mount", `{"Name":"db","ID":"a","id":"b"}`, 400, `write "ID"`},
		{"field case by unicode folding", "/VolumeDriver.Create", `{"Name":"db","Opt\u017f":{}}`, 400, `write "Opts"`},
		{"name number", "/VolumeDriver.Create", `{"Name":5}`, 400, `field "Name" must be a string, not a number`},
		{"name null", "/VolumeDriver.Get", `{"Name":null}`, 400, `field "Name" must be a string, not null`},
		{"id bool", "/VolumeDriver.Mount", `{"Name":"db","ID":true}`, 400, `field "ID" must be a string, not a boolean`},
		{"opts list", "/VolumeDriver.Create", `{"Name":"db","Opts":["size=1g"]}`, 400, `field "Opts" must be an object of string values`},
		{"opts string", "/VolumeDriver.Create", `{"Name":"db","Opts":"size=1g"}`, 400, `not a string`},
		{"option number", "/VolumeDriver.Create", `{"Name":"db","Opts":{"size":1}}`, 400, `option "size" must have a string value, not a number`},
		{"option null", "/VolumeDriver.Create", `{"Name":"db","Opts":{"size":null}}`, 400, `not null`},
		{"option object", "/VolumeDriver.Create", `{"Name":"db","Opts":{"o":{"vers":"4"}}}`, 400, `not an object`},
		{"option twice", "/VolumeDriver.Create", `{"Name":"db","Opts":{"size":"1m","size":"2m"}}`, 400, `option "size" is given twice`},
		{"nul in name", "/VolumeDriver.Create", `{"Name":"d\u0000b"}`, 400, `field "Name" contains the control character U+0000 at byte 1`},
		{"newline in id", "/VolumeDriver.Mount", `{"Name":"db","ID":"a\nb"}`, 400, `field "ID" contains the control character U+000A`},
		{"c1 in name", "/VolumeDriver.Remove", `{"Name":"d\u0085b"}`, 400, `U+0085`},
		{"control in key", "/VolumeDriver.Create", `{"Name":"db","Opts":{"si\tze":"1m"}}`, 400, `option name "si\tze" contains the control character U+0009`},
		{"control in value", "/VolumeDriver.Create", `{"Name":"db","Opts":{"size":"1m\u0000"}}`, 400, `the value of option "size" contains the control character U+0000`},
		{"too large", "/VolumeDriver.Create", `{"Name":"` + strings.Repeat("a", MaxRequestBody) + `"}`, 413, "larger than the limit of 1 MiB (1048576 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := decodeRequest(tt.path, []byte(tt.body))
			require.Error(t, err)
			assert.Nil(t, got)
			var br *badRequest
			require.ErrorAs(t, err, &br)
			assert.Equal(t, tt.status, br.status)
			assert.Contains(t, err.Error(), tt.errPart)
		})
	}
}

func TestDecodeErrorsNeverShowOptionValues(t *testing.T) {
	for _, body := range []string{
		`{"Name":"db","Opts":{"passphrase":"hunter2\u0000"}}`,
		`{"Name":"db","Opts":{"key":"hunter2","key":"hunter2"}}`,
		`{"Name":"db","Opts":{"secret":["hunter2"]}}`,
		`{"Name":"db","Opts":{"password":{"v":"hunter2"}}}`,
	} {
		_, _, err := decodeRequest("/VolumeDriver.Create", []byte(body))
		require.Error(t, err, body)
		assert.NotContains(t, err.Error(), "hunter2", body)
	}
}

// recorder is a volume.Driver that records the requests it gets.
type recorder struct {
	volume.Driver
	got []any
}

func (r *recorder) Create(req *volume.CreateRequest) error { r.got = append(r.got, req); return nil }

func (r *recorder) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	r.got = append(r.got, req)
	return &volume.MountResponse{Mountpoint: "/mnt/" + req.Name}, nil
}

func (r *recorder) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	r.got = append(r.got, req)
	return nil, errors.New("no such volume: " + req.Name)
}

func (r *recorder) List() (*volume.ListResponse, error) {
	r.got = append(r.got, "List")
	return &volume.ListResponse{}, nil
}

// serveStrict runs one request through Handler in front of a recorder.
func serveStrict(t *testing.T, method, path, body string) (*httptest.ResponseRecorder, *test.Hook, []any) {
	t.Helper()
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	d := &recorder{}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, "http://plugin"+path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	Handler(d, log).ServeHTTP(rec, req)
	return rec, hook, d.got
}

func TestHandlerPassesRequestsOn(t *testing.T) {
	rec, hook, got := serveStrict(t, http.MethodPost, "/VolumeDriver.Create", `{"Name":"db","Opts":{"type":"tmpfs"}}`+"\n")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, []any{&volume.CreateRequest{Name: "db", Options: map[string]string{"type": "tmpfs"}}}, got)
	assert.JSONEq(t, `{}`, rec.Body.String())
	assert.Empty(t, hook.AllEntries(), "accepted requests are logged by Instrumented, not here")

	rec, _, got = serveStrict(t, http.MethodPost, "/VolumeDriver.Get", `{"Name":"db"}`)
	assert.Equal(t, http.StatusInternalServerError, rec.Code, "driver errors are answered as the sdk does")
	assert.JSONEq(t, `{"Err":"no such volume: db"}`, rec.Body.String())
	assert.Equal(t, []any{&volume.GetRequest{Name: "db"}}, got)

	rec, _, got = serveStrict(t, http.MethodPost, "/VolumeDriver.List", ``)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, []any{"List"}, got)

	rec, _, _ = serveStrict(t, http.MethodPost, "/Plugin.Activate", `{}`)
	assert.JSONEq(t, `{"Implements":["VolumeDriver"]}`, rec.Body.String())
	assert.Equal(t, "application/vnd.docker.plugins.v1.1+json", rec.Header().Get("Content-Type"))
}

func TestStrictRequestsRejects(t *testing.T) {
	tests := []struct {
		method, path, body string
		status             int
		errPart            string
	}{
		{http.MethodPost, "/VolumeDriver.Create", `{"Name":"db","Opts":{"password":["hunter2"]}}`, 400, `option "password" must have a string value`},
		{http.MethodGet, "/VolumeDriver.List", ``, 405, "method \"GET\" is not allowed: plugin requests are POST"},
		{http.MethodPost, "/", `{}`, 404, "unknown endpoint \"/\""},
		{http.MethodPost, "/VolumeDriver.Get", strings.Repeat(" ", MaxRequestBody+1), 413, "limit of 1 MiB"},
	}
	for _, tt := range tests {
		rec, hook, got := serveStrict(t, tt.method, tt.path, tt.body)
		assert.Empty(t, got, "%s %s: the driver never sees a rejected request", tt.method, tt.path)
		assert.Equal(t, tt.status, rec.Code, "%s %s", tt.method, tt.path)
		assert.Equal(t, "application/vnd.docker.plugins.v1.1+json", rec.Header().Get("Content-Type"))
		var out map[string]string
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), "%q", rec.Body.String())
		assert.Equal(t, []string{"Err"}, keys(out))
		assert.Contains(t, out["Err"], tt.errPart)

		require.Len(t, hook.AllEntries(), 1, "a rejected request is logged once")
		e := hook.LastEntry()
		assert.Equal(t, logrus.WarnLevel, e.Level)
		assert.Equal(t, "request rejected", e.Message)
		assert.Equal(t, tt.status, e.Data["status"])
		line, err := e.String()
		require.NoError(t, err)
		assert.NotContains(t, line, "hunter2")
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestStrictRequestsLogsTheOperation(t *testing.T) {
	_, hook, _ := serveStrict(t, http.MethodPost, "/VolumeDriver.Mount", `{"Name":1}`)
	assert.Equal(t, "Mount", hook.LastEntry().Data["op"])
	_, hook, _ = serveStrict(t, http.MethodPost, "/Plugin.Activate", `[]`)
	assert.Equal(t, "Plugin.Activate", hook.LastEntry().Data["op"])
	_, hook, _ = serveStrict(t, http.MethodPost, "/x", `{}`)
	assert.Equal(t, `"/x"`, hook.LastEntry().Data["op"])
}

func TestHandlerIgnoresUnknownFields(t *testing.T) {
	rec, hook, got := serveStrict(t, http.MethodPost, "/VolumeDriver.Mount",
		`{"Name":"db","ID":"0123abcd","Future":"hunter2","Other":{"k":"hunter2"}}`)
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.JSONEq(t, `{"Mountpoint":"/mnt/db"}`, rec.Body.String())
	assert.Equal(t, []any{&volume.MountRequest{Name: "db", ID: "0123abcd"}}, got, "the driver gets Name and ID")

	require.Len(t, hook.AllEntries(), 1)
	e := hook.LastEntry()
	assert.Equal(t, logrus.DebugLevel, e.Level)
	assert.Equal(t, "unknown request fields ignored", e.Message)
	assert.Equal(t, "VolumeDriver.Mount", e.Data["endpoint"])
	assert.Equal(t, `"Future", "Other"`, e.Data["fields"])
	line, err := e.String()
	require.NoError(t, err)
	assert.NotContains(t, line, "hunter2", "values of unknown fields are never logged")

	rec, hook, got = serveStrict(t, http.MethodPost, "/VolumeDriver.Create", `{"Name":"db","Opts":null,"Labels":{"a":"b"}}`)
	assert.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Equal(t, []any{&volume.CreateRequest{Name: "db"}}, got)
	assert.Equal(t, `"Labels"`, hook.LastEntry().Data["fields"])
}

func TestFieldListIsBounded(t *testing.T) {
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("f%02d", i))
	}
	names = append(names, strings.Repeat("x", 100))
	got := fieldList(names)
	assert.True(t, strings.HasPrefix(got, `"f00", "f01", `), got)
	assert.True(t, strings.HasSuffix(got, `"f15", and 5 more`), got)
	assert.Equal(t, `"`+strings.Repeat("x", 64)+`" (100 bytes)`, fieldList(names[20:]))
}
