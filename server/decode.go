package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	name    string   // as dockerd names it, e.g. "VolumeDriver.Create"
	fields  []string // the fields of its body; none for List and the like
	example string   // a valid body, for messages
	build   func(fields map[string]json.RawMessage) (any, error)
}

var endpoints = map[string]endpoint{}

func init() {
	named := func(op string, build func(map[string]json.RawMessage) (any, error), fields ...string) {
		parts := make([]string, len(fields))
		for i, f := range fields {
			parts[i] = strconv.Quote(f) + ": " + strconv.Quote(fieldExample[f])
			if f == "Opts" {
				parts[i] = `"Opts": {"type": "local"}`
			}
		}
		endpoints["/VolumeDriver."+op] = endpoint{name: "VolumeDriver." + op, fields: fields,
			example: "{" + strings.Join(parts, ", ") + "}", build: build}
	}
	named("Create", buildCreate, "Name", "Opts")
	named("Remove", nameOnly(func(n string) any { return &volume.RemoveRequest{Name: n} }), "Name")
	named("Path", nameOnly(func(n string) any { return &volume.PathRequest{Name: n} }), "Name")
	named("Get", nameOnly(func(n string) any { return &volume.GetRequest{Name: n} }), "Name")
	named("Mount", buildMount, "Name", "ID")
	named("Unmount", buildUnmount, "Name", "ID")
	for _, p := range []string{"/VolumeDriver.List", "/VolumeDriver.Capabilities", "/Plugin.Activate"} {
		endpoints[p] = endpoint{name: p[1:], example: "{}", build: func(map[string]json.RawMessage) (any, error) { return struct{}{}, nil }}
	}
}

// endpointNames lists the endpoints for the unknown-endpoint message.
func endpointNames() string {
	var names []string
	for _, e := range endpoints {
		names = append(names, e.name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// decodeRequest decodes body strictly as a request to path and returns it
// as the sdk's request type (*volume.CreateRequest, ...; struct{}{} for
// the endpoints without fields). Errors are *badRequest.
func decodeRequest(path string, body []byte) (any, error) {
	ep, ok := endpoints[path]
	if !ok {
		return nil, &badRequest{status: http.StatusNotFound,
			msg: fmt.Sprintf("unknown endpoint %s: holdfast answers %s", quote(path), endpointNames())}
	}
	if len(body) > MaxRequestBody {
		return nil, tooLarge()
	}
	if !utf8.Valid(body) {
		return nil, malformed("request body is not valid UTF-8 (at byte %d); send JSON in UTF-8 such as %s", invalidUTF8At(body), ep.example)
	}
	fields, err := readObject(ep, body)
	if err != nil {
		return nil, err
	}
	return ep.build(fields)
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

// readObject reads the one JSON object of body and returns its fields,
// refusing unknown and repeated fields and anything after the object. An
// empty body or null gives no fields, which only endpoints without fields
// accept.
func readObject(ep endpoint, body []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	switch {
	case err == io.EOF && len(ep.fields) == 0:
		return nil, nil
	case err == io.EOF:
		return nil, malformed("empty request body: %s takes a JSON object such as %s", ep.name, ep.example)
	case err != nil:
		return nil, syntaxError(ep, dec, err)
	case tok == nil && len(ep.fields) == 0:
		return nil, trailing(ep, dec)
	case tok != json.Delim('{'):
		return nil, malformed("request body is %s, not an object: %s takes a JSON object such as %s", tokenKind(tok), ep.name, ep.example)
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		if err := readField(ep, dec, fields); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing }
		return nil, syntaxError(ep, dec, err)
	}
	return fields, trailing(ep, dec)
}

// readField reads one "name": value pair of the request object.
func readField(ep endpoint, dec *json.Decoder, fields map[string]json.RawMessage) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(ep, dec, err)
	}
	name, _ := tok.(string)
	if !slices.Contains(ep.fields, name) {
		return unknownField(ep, name)
	}
	if _, dup := fields[name]; dup {
		return malformed("field %q is given twice; give it once", name)
	}
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return syntaxError(ep, dec, err)
	}
	fields[name] = raw
	return nil
}

func unknownField(ep endpoint, name string) error {
	if len(ep.fields) == 0 {
		return malformed("unknown field %s: %s takes no fields; send {} or an empty body", quote(name), ep.name)
	}
	msg := fmt.Sprintf("unknown field %s: %s takes only %s, e.g. %s", quote(name), ep.name, strings.Join(ep.fields, " and "), ep.example)
	for _, f := range ep.fields {
		if strings.EqualFold(f, name) {
			msg += fmt.Sprintf(" (field names are case-sensitive: write %q)", f)
		}
	}
	return malformed("%s", msg)
}

// trailing refuses anything but white space after the JSON value.
func trailing(ep endpoint, dec *json.Decoder) error {
	off := dec.InputOffset()
	if _, err := dec.Token(); err == io.EOF {
		return nil
	}
	return malformed("unexpected data after the JSON value at byte %d: send one JSON object per request, such as %s", off, ep.example)
}

func syntaxError(ep endpoint, dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return malformed("request body is not valid JSON: %s at byte %d; %s takes a JSON object such as %s", se.Error(), se.Offset, ep.name, ep.example)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return malformed("request body is not valid JSON: it ends at byte %d inside a value; %s takes a JSON object such as %s", dec.InputOffset(), ep.name, ep.example)
	}
	return malformed("request body is not valid JSON: %v; %s takes a JSON object such as %s", err, ep.name, ep.example)
}

// tokenKind names the JSON type of a token that starts a value.
func tokenKind(tok json.Token) string {
	switch t := tok.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case json.Delim:
		if t == '[' {
			return "a list"
		}
		return "an object"
	}
	return "not JSON"
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

// stringField returns a field that must be a string without control
// characters; absent, it is "".
func stringField(fields map[string]json.RawMessage, name string) (string, error) {
	raw, ok := fields[name]
	if !ok {
		return "", nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", malformed("field %q must be a string, not %s, e.g. %q: %q", name, rawKind(raw), name, fieldExample[name])
	}
	if err := printable(s); err != nil {
		return "", malformed("field %q %v; names and IDs are printable text", name, err)
	}
	return s, nil
}

// fieldExample is a valid value of each string field, for messages.
var fieldExample = map[string]string{"Name": "vol", "ID": "0123abcd"}

// printable refuses control characters, saying which and where.
func printable(s string) error {
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("contains the control character %U at byte %d", r, i)
	}
	return nil
}

// optsField returns Opts: null, absent or {} give nil; otherwise an object
// of string values, no key twice, no control characters.
func optsField(fields map[string]json.RawMessage) (map[string]string, error) {
	raw, ok := fields["Opts"]
	if !ok || raw[0] == 'n' {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, malformed(`field "Opts" must be an object of string values such as {"type": "tmpfs", "size": "64m"}, not %s`, rawKind(raw))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.Token() // {, checked above
	opts := map[string]string{}
	for dec.More() {
		if err := readOption(dec, opts); err != nil {
			return nil, err
		}
	}
	if len(opts) == 0 {
		return nil, nil
	}
	return opts, nil
}

// readOption reads one "key": "value" pair of Opts. Messages name the key
// but never show the value.
func readOption(dec *json.Decoder, opts map[string]string) error {
	tok, err := dec.Token()
	if err != nil {
		return malformed("Opts is not valid JSON: %v", err)
	}
	key, _ := tok.(string)
	if err := printable(key); err != nil {
		return malformed("option name %s %v; option names are printable text such as size", quote(key), err)
	}
	if _, dup := opts[key]; dup {
		return malformed("option %s is given twice; give it once", quote(key))
	}
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return malformed("Opts is not valid JSON: %v", err)
	}
	var v string
	if raw[0] != '"' || json.Unmarshal(raw, &v) != nil {
		return malformed("option %s must have a string value, not %s: write the value in quotes, as a JSON string",
			quote(key), rawKind(raw))
	}
	if err := printable(v); err != nil {
		return malformed("the value of option %s %v; option values are single-line printable text", quote(key), err)
	}
	opts[key] = v
	return nil
}

func buildCreate(fields map[string]json.RawMessage) (any, error) {
	name, err := stringField(fields, "Name")
	if err != nil {
		return nil, err
	}
	opts, err := optsField(fields)
	if err != nil {
		return nil, err
	}
	return &volume.CreateRequest{Name: name, Options: opts}, nil
}

func nameOnly(make func(string) any) func(map[string]json.RawMessage) (any, error) {
	return func(fields map[string]json.RawMessage) (any, error) {
		name, err := stringField(fields, "Name")
		if err != nil {
			return nil, err
		}
		return make(name), nil
	}
}

// nameAndID reads the fields of Mount and Unmount.
func nameAndID(fields map[string]json.RawMessage) (string, string, error) {
	name, err := stringField(fields, "Name")
	if err != nil {
		return "", "", err
	}
	id, err := stringField(fields, "ID")
	return name, id, err
}

func buildMount(fields map[string]json.RawMessage) (any, error) {
	name, id, err := nameAndID(fields)
	if err != nil {
		return nil, err
	}
	return &volume.MountRequest{Name: name, ID: id}, nil
}

func buildUnmount(fields map[string]json.RawMessage) (any, error) {
	name, id, err := nameAndID(fields)
	if err != nil {
		return nil, err
	}
	return &volume.UnmountRequest{Name: name, ID: id}, nil
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
// handler: it decodes every request strictly (see decodeRequest), passes
// it to d and encodes the answer as the sdk does. A request it refuses is
// answered with {"Err": "..."} and logged once at warn level, without
// option values.
//
// So every request the sdk would misread, or answer with a plain-text HTTP
// 400 that dockerd shows as raw text, gets an {"Err": "..."} naming the
// problem and the fix. It accepts exactly what dockerd sends:
//
//   - POST to a known endpoint; the Content-Type is not checked (dockerd
//     sends application/vnd.docker.plugins.v1.2+json, curl users send
//     others, and the body is JSON whatever the header says).
//   - One JSON object in valid UTF-8, optionally followed by white space
//     (dockerd's encoder ends it with a newline).
//   - Field names exactly as dockerd writes them: Name, Opts, ID. Go's
//     encoding/json would also match "name" or "NAME", and take the last of
//     duplicate fields; here a differently cased field is refused as unknown
//     (the message says which spelling to use) and a duplicate is refused,
//     so the driver never acts on a body that two readers could read
//     differently.
//   - Opts as null (dockerd sends that for a volume created without
//     options) or an object of string values; an empty object is the same
//     as null.
//   - For List, Capabilities and Plugin.Activate: an empty body, {} or null.
//
// Names, IDs, option names and option values must not contain control
// characters (NUL, newline, ...). Whether a name follows Docker's rule, a
// Mount has an ID or an option is valid is left to the driver, which
// answers those with messages of its own.
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
		if err == nil {
			req, err = decodeRequest(r.URL.Path, body)
		}
		if err != nil {
			reject(w, r, log, err)
			return
		}
		res, err := dispatch(d, r.URL.Path, req)
		if err != nil {
			sdk.EncodeResponse(w, volume.NewErrorResponse(err.Error()), true)
			return
		}
		sdk.EncodeResponse(w, res, false)
	})
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
