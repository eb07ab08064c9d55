package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// MaxRequestBody is the largest request body the plugin reads, in bytes.
// dockerd's requests are a few hundred bytes: a volume name, a mount ID and
// a handful of options.
const MaxRequestBody = 1 << 20

// badRequest is a request refused before the driver sees it. Its message
// never contains an option value, which may be key material.
type badRequest struct {
	status int
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &badRequest{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// endpoint is the body one endpoint takes.
type endpoint struct {
	name    string     // as dockerd names it, e.g. "VolumeDriver.Create"
	fields  []string   // the fields it reads; none for List and the like
	example string     // a valid body, for messages
	req     func() any // a new request of the sdk's type; nil without fields
}

var endpoints = map[string]endpoint{}

func init() {
	named := func(op string, req func() any, fields ...string) {
		parts := make([]string, len(fields))
		for i, f := range fields {
			parts[i] = strconv.Quote(f) + ": " + strconv.Quote(fieldExample[f])
			if f == "Opts" {
				parts[i] = `"Opts": {"type": "local"}`
			}
		}
		endpoints["/VolumeDriver."+op] = endpoint{name: "VolumeDriver." + op, fields: fields,
			example: "{" + strings.Join(parts, ", ") + "}", req: req}
	}
	named("Create", func() any { return &volume.CreateRequest{} }, "Name", "Opts")
	named("Remove", func() any { return &volume.RemoveRequest{} }, "Name")
	named("Path", func() any { return &volume.PathRequest{} }, "Name")
	named("Get", func() any { return &volume.GetRequest{} }, "Name")
	named("Mount", func() any { return &volume.MountRequest{} }, "Name", "ID")
	named("Unmount", func() any { return &volume.UnmountRequest{} }, "Name", "ID")
	for _, p := range []string{"/VolumeDriver.List", "/VolumeDriver.Capabilities", "/Plugin.Activate"} {
		endpoints[p] = endpoint{name: p[1:], example: "{}"}
	}
}

// fieldExample is a valid value of each string field, for messages.
var fieldExample = map[string]string{"Name": "vol", "ID": "0123abcd"}

// endpointNames lists the endpoints for the unknown-endpoint message.
func endpointNames() string {
	var names []string
	for _, e := range endpoints {
		names = append(names, e.name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// decodeRequest decodes body as a request to path and returns it as the
// sdk's request type (*volume.CreateRequest, ...; struct{}{} for the
// endpoints without fields), with the names of the fields it ignored,
// sorted. Errors are *badRequest. See Handler for what it accepts.
func decodeRequest(path string, body []byte) (req any, ignored []string, err error) {
	ep, ok := endpoints[path]
	if !ok {
		return nil, nil, &badRequest{status: http.StatusNotFound,
			msg: fmt.Sprintf("unknown endpoint %s: holdfast answers %s", quote(path), endpointNames())}
	}
	if len(body) > MaxRequestBody {
		return nil, nil, tooLarge()
	}
	if !utf8.Valid(body) {
		return nil, nil, malformed("request body is not valid UTF-8 (at byte %d); send JSON in UTF-8 such as %s", invalidUTF8At(body), ep.example)
	}
	raw, err := oneValue(ep, body)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case (raw == nil || raw[0] == 'n') && ep.req == nil:
		return struct{}{}, nil, nil
	case raw == nil:
		return nil, nil, malformed("empty request body: %s takes a JSON object such as %s", ep.name, ep.example)
	case raw[0] != '{':
		return nil, nil, malformed("request body is %s, not an object: %s takes a JSON object such as %s", rawKind(raw), ep.name, ep.example)
	}
	fields, twice := members(raw)
	if twice != "" {
		return nil, nil, malformed("field %s is given twice; give it once", quote(twice))
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if slices.Contains(ep.fields, name) {
			continue
		}
		// encoding/json would read "name" as Name; dockerd never sends it.
		if i := slices.IndexFunc(ep.fields, func(f string) bool { return strings.EqualFold(f, name) }); i >= 0 {
			return nil, nil, malformed("unknown field %s: %s takes only %s, e.g. %s (field names are case-sensitive: write %q)",
				quote(name), ep.name, strings.Join(ep.fields, " and "), ep.example, ep.fields[i])
		}
		ignored = append(ignored, name)
	}
	for _, f := range ep.fields {
		if raw, ok := fields[f]; ok {
			if err := checkField(f, raw); err != nil {
				return nil, nil, err
			}
		}
	}
	if ep.req == nil {
		return struct{}{}, ignored, nil
	}
	req = ep.req()
	if err := json.Unmarshal(raw, req); err != nil { // checked above: cannot happen
		return nil, nil, malformed("request body could not be decoded: %v; %s takes a JSON object such as %s", err, ep.name, ep.example)
	}
	if c, ok := req.(*volume.CreateRequest); ok && len(c.Options) == 0 {
		c.Options = nil // one form of "no options": null, absent and {} alike
	}
	return req, ignored, nil
}

func tooLarge() error {
	return &badRequest{status: http.StatusRequestEntityTooLarge,
		msg: fmt.Sprintf("request body is larger than the limit of 1 MiB (%d bytes); a volume request is a name, a mount ID and a few options", MaxRequestBody)}
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// oneValue returns the one JSON value of body, nil for an empty body, and
// refuses invalid JSON and anything but white space after the value.
func oneValue(ep endpoint, body []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	err := dec.Decode(&raw)
	var se *json.SyntaxError
	switch {
	case err == io.EOF:
		return nil, nil
	case errors.As(err, &se):
		return nil, malformed("request body is not valid JSON: %s at byte %d; %s takes a JSON object such as %s", se.Error(), se.Offset, ep.name, ep.example)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, malformed("request body is not valid JSON: it ends at byte %d inside a value; %s takes a JSON object such as %s", len(body), ep.name, ep.example)
	case err != nil:
		return nil, malformed("request body is not valid JSON: %v; %s takes a JSON object such as %s", err, ep.name, ep.example)
	}
	if off := dec.InputOffset(); len(bytes.Trim(body[off:], " \t\r\n")) > 0 {
		return nil, malformed("unexpected data after the JSON value at byte %d: send one JSON object per request, such as %s", off, ep.example)
	}
	return raw, nil
}

// members returns the members of obj, a valid JSON object, and the first
// name it gives twice, if any. encoding/json would silently keep the last
// of the two; holdfast refuses such a body instead, as dockerd never sends
// one and two readers could read it differently.
func members(obj json.RawMessage) (m map[string]json.RawMessage, twice string) {
	m = map[string]json.RawMessage{}
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.Token() // {
	for dec.More() {
		tok, _ := dec.Token()
		name, _ := tok.(string)
		var v json.RawMessage
		dec.Decode(&v)
		if _, ok := m[name]; ok && twice == "" {
			twice = name
		}
		m[name] = v
	}
	return m, twice
}

// checkField checks the value of a known field: Name and ID are strings
// of printable text, Opts is null or an object of such strings. Messages
// name the field or option but never show an option value, which may be
// key material.
func checkField(name string, raw json.RawMessage) error {
	if name != "Opts" {
		var s string
		if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return malformed("field %q must be a string, not %s, e.g. %q: %q", name, rawKind(raw), name, fieldExample[name])
		}
		if err := printable(s); err != nil {
			return malformed("field %q %v; names and IDs are printable text", name, err)
		}
		return nil
	}
	if raw[0] == 'n' {
		return nil
	}
	if raw[0] != '{' {
		return malformed(`field "Opts" must be an object of string values such as {"type": "tmpfs", "size": "64m"}, not %s`, rawKind(raw))
	}
	opts, twice := members(raw)
	if twice != "" {
		return malformed("option %s is given twice; give it once", quote(twice))
	}
	for _, key := range slices.Sorted(maps.Keys(opts)) {
		if err := printable(key); err != nil {
			return malformed("option name %s %v; option names are printable text such as size", quote(key), err)
		}
		var v string
		if raw := opts[key]; raw[0] != '"' || json.Unmarshal(raw, &v) != nil {
			return malformed("option %s must have a string value, not %s: write the value in quotes, as a JSON string", quote(key), rawKind(raw))
		}
		if err := printable(v); err != nil {
			return malformed("the value of option %s %v; option values are single-line printable text", quote(key), err)
		}
	}
	return nil
}

// rawKind names the JSON type of a raw value.
func rawKind(raw json.RawMessage) string {
	switch raw[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '[':
		return "a list"
	case '{':
		return "an object"
	}
	return "a number"
}

// printable refuses control characters, saying which and where.
func printable(s string) error {
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("contains the control character %U at byte %d", r, i)
	}
	return nil
}

// quote quotes s for a message, cut to 64 bytes.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + fmt.Sprintf(" (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

// Handler answers the volume plugin protocol for d, in place of the sdk's
// handler: it decodes every request (see below), passes it to d and
// encodes the answer as the sdk does. A request it refuses is answered
// with {"Err": "..."} and logged once at warn level, without option values.
//
// So every request the sdk would misread, or answer with a plain-text HTTP
// 400 that dockerd shows as raw text, gets an {"Err": "..."} naming the
// problem and the fix. It reads requests with encoding/json into the sdk's
// request types, after these checks:
//
//   - POST to a known endpoint; the Content-Type is not checked (dockerd
//     sends application/vnd.docker.plugins.v1.2+json, curl users send
//     others, and the body is JSON whatever the header says).
//   - One JSON object in valid UTF-8, at most MaxRequestBody bytes,
//     optionally followed by white space (dockerd's encoder ends it with a
//     newline). For List, Capabilities and Plugin.Activate an empty body
//     or null also does.
//   - Fields holdfast does not know are ignored, as dockerd ignores what it
//     does not know in answers, so a field a later dockerd adds (it once
//     added ID to Mount and Unmount) breaks nothing. They are logged at
//     debug level by name, never with their values.
//   - Known fields are spelled exactly as dockerd writes them: Name, Opts,
//     ID. encoding/json would also match "name" or "NAME", and take the
//     last of duplicate fields; here a differently cased known field and a
//     field or option given twice are refused (the message says which
//     spelling to use), so the driver never acts on a body that two readers
//     could read differently.
//   - Name and ID are strings; Opts is null (dockerd sends that for a
//     volume created without options) or an object of string values; an
//     empty object is the same as null. A non-string option value is
//     refused naming its option, never showing the value.
//
// Names, IDs, option names and option values must not contain control
// characters (NUL, newline, ...). Whether a name is given and follows
// Docker's rule, a Mount has an ID or an option is valid is left to the
// driver, which answers those with messages of its own.
//
// Status codes: 400 for a malformed body, 413 for one over the limit, 405
// for a method other than POST and 404 for an unknown endpoint. dockerd's
// plugin client reads {"Err"} from any answer that is not 200 and shows the
// message prefixed with the endpoint, so every one of them reaches the user;
// 404 is kept for unknown endpoints because dockerd takes it to mean "not
// implemented" (plugins.IsNotFound), which is what it is. The driver's own
// errors stay HTTP 500, as the sdk answers them.
func Handler(d volume.Driver, log logrus.FieldLogger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r)
		var req any
		var ignored []string
		if err == nil {
			req, ignored, err = decodeRequest(r.URL.Path, body)
		}
		if err != nil {
			reject(w, r, log, err)
			return
		}
		if len(ignored) > 0 {
			log.WithFields(logrus.Fields{"endpoint": endpoints[r.URL.Path].name, "fields": fieldList(ignored)}).
				Debug("unknown request fields ignored")
		}
		res, err := dispatch(d, r.URL.Path, req)
		if err != nil {
			sdk.EncodeResponse(w, volume.NewErrorResponse(err.Error()), true)
			return
		}
		sdk.EncodeResponse(w, res, false)
	})
}

// fieldList names fields for the log: quoted, cut, at most 16 of them.
func fieldList(names []string) string {
	const max = 16
	var parts []string
	for _, n := range names[:min(len(names), max)] {
		parts = append(parts, quote(n))
	}
	if len(names) > max {
		parts = append(parts, fmt.Sprintf("and %d more", len(names)-max))
	}
	return strings.Join(parts, ", ")
}

// activation is the answer to Plugin.Activate.
type activation struct{ Implements []string }

// dispatch passes a decoded request to the driver.
func dispatch(d volume.Driver, path string, req any) (any, error) {
	switch r := req.(type) {
	case *volume.CreateRequest:
		return struct{}{}, d.Create(r)
	case *volume.RemoveRequest:
		return struct{}{}, d.Remove(r)
	case *volume.MountRequest:
		return d.Mount(r)
	case *volume.UnmountRequest:
		return struct{}{}, d.Unmount(r)
	case *volume.PathRequest:
		return d.Path(r)
	case *volume.GetRequest:
		return d.Get(r)
	}
	switch path {
	case "/VolumeDriver.List":
		return d.List()
	case "/VolumeDriver.Capabilities":
		return d.Capabilities(), nil
	}
	return activation{Implements: []string{"VolumeDriver"}}, nil
}

// readBody reads the body of a POST, at most MaxRequestBody bytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &badRequest{status: http.StatusMethodNotAllowed,
			msg: fmt.Sprintf("method %s is not allowed: plugin requests are POST, as dockerd sends them", quote(r.Method))}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, tooLarge()
	case err != nil:
		return nil, malformed("could not read the request body: %v", err)
	}
	return body, nil
}

// reject answers {"Err": msg} with the status of err and logs it.
func reject(w http.ResponseWriter, r *http.Request, log logrus.FieldLogger, err error) {
	status := http.StatusBadRequest
	var br *badRequest
	if errors.As(err, &br) {
		status = br.status
	}
	op := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/VolumeDriver."), "/")
	if _, known := endpoints[r.URL.Path]; !known {
		op = quote(r.URL.Path)
	}
	log.WithFields(logrus.Fields{"op": op, "status": status}).WithError(err).Warn("request rejected")
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	w.WriteHeader(status)
	writeErr(w, err.Error())
}

// writeErr writes the body of an error answer, as the sdk does.
func writeErr(w io.Writer, msg string) {
	json.NewEncoder(w).Encode(volume.NewErrorResponse(msg))
}
