package nfs

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/holdfast/holdfast/driver"
)

// Options a volume of this type accepts with --opt.
const (
	optAddr   = "addr"
	optDevice = "device"
	optShare  = "share"
	optO      = "o"
)

// refused names the options of other volume types that make no sense for
// NFS, with the reason given to users who pass them.
var refused = map[string]string{
	"uid":  "NFS keeps ownership on the server; set it there",
	"gid":  "NFS keeps ownership on the server; set it there",
	"mode": "NFS keeps permissions on the server; set them there",
	"size": "an NFS volume has the size of its export; set a quota on the server",
}

// maxPathLen is the longest export path the kernel's NFS client takes.
const maxPathLen = 1024

// Versions this backend mounts, newest first: the order of negotiation.
var versions = []string{"4.2", "4.1", "4.0", "3"}

// mountOnly are words of o that only mount(8) and fstab understand. Docker's
// local driver passes them to mount(8), which ignores them; they are dropped.
var mountOnly = []string{"defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail", "comment"}

// notNFS are words of o that ask for something other than an NFS mount.
var notNFS = []string{"bind", "rbind", "remount", "move", "loop"}

// specs returns the options the type accepts, for driver.ParseOptions.
func specs() []driver.Option {
	return []driver.Option{
		{Name: optAddr, Form: "the server's host name, IPv4 or IPv6 address", Canon: canonHost},
		{Name: optDevice, Form: "the export as :/path (or host:/path)", Canon: canonDevice},
		{Name: optShare, Form: "host:/export/path ([v6addr]:/path for IPv6)", Canon: canonShare},
		// o is checked by merge, whose errors never echo the whole value:
		// it may hold a secret.
		{Name: optO, Form: "comma-separated NFS mount options such as vers=4.1,hard", Canon: keep},
	}
}

// config is an NFS volume's settings in one canonical form, however the
// user spelled them.
type config struct {
	// host is the server: a lower-case host name or an IP address.
	host string
	// export is the absolute path of the export on the server.
	export string
	// version is "" (negotiate 4.2 down to 3), "4" (negotiate 4.x) or an
	// exact version.
	version string
	// opts are the options of o other than addr and the version, in order.
	opts optList
}

// parse checks raw (the options without type) and returns the volume's
// config. typ names the volume type in errors.
func parse(typ string, raw map[string]string) (config, error) {
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if why, ok := refused[k]; ok {
			return config{}, fmt.Errorf("%w %q for type=%s: %s", driver.ErrInvalidOption, k, typ, why)
		}
	}
	opts, err := driver.ParseOptions(typ, raw, specs())
	if err != nil {
		return config{}, err
	}
	return merge(typ, opts)
}

// merge combines the canonical values of the options given into a config,
// refusing contradictions.
func merge(typ string, opts map[string]string) (config, error) {
	o, err := parseO(opts[optO])
	if err != nil {
		return config{}, invalid(typ, optO, err)
	}
	c := config{opts: o.without("addr", "vers", "nfsvers", "minorversion")}
	if c.host, c.export, err = server(typ, opts, o); err != nil {
		return config{}, err
	}
	if c.version, err = versionOf(o); err != nil {
		return config{}, invalid(typ, optO, err)
	}
	if typ == TypeNFS4 && c.version == "3" {
		return config{}, fmt.Errorf("%w: type=%s mounts NFSv4 only; use type=nfs for vers=3", driver.ErrInvalidOption, typ)
	}
	return c, nil
}

// server finds the server and the export path among addr, o's addr=,
// device and share, which must agree.
func server(typ string, opts map[string]string, o optList) (host, export string, err error) {
	servers := &serverSet{}
	if a, ok := opts[optAddr]; ok {
		servers.add(optAddr+"="+a, a)
	}
	for _, a := range o.values("addr") {
		h, err := canonHost(a)
		if err != nil {
			return "", "", invalid(typ, optO, fmt.Errorf("addr=%s: %w", a, err))
		}
		servers.add("o=addr="+a, h)
	}
	dev, hasDev := opts[optDevice]
	share, hasShare := opts[optShare]
	key := optDevice
	switch {
	case hasDev && hasShare:
		return "", "", fmt.Errorf("%w: type=%s takes share=HOST:/PATH or device=:/PATH (with addr), not both", driver.ErrInvalidOption, typ)
	case hasShare:
		dev, key = share, optShare
	}
	if hasDev || hasShare {
		h, p, err := splitShare(dev)
		if err != nil {
			return "", "", invalid(typ, key, err)
		}
		if h != "" {
			servers.add(key+"="+dev, h)
		}
		export = p
	}
	if err := servers.err(typ); err != nil {
		return "", "", err
	}
	switch {
	case servers.host == "":
		return "", "", fmt.Errorf("%w: type=%s needs the server: share=HOST:/PATH, or addr=HOST with device=:/PATH (o=addr=HOST also works, as with Docker's local driver)", driver.ErrInvalidOption, typ)
	case export == "":
		return "", "", fmt.Errorf("%w: type=%s needs the export path: share=%s:/PATH or device=:/PATH", driver.ErrInvalidOption, typ, bracket(servers.host))
	}
	return servers.host, export, nil
}

func invalid(typ, opt string, err error) error {
	return fmt.Errorf("%w %s for type=%s: %v", driver.ErrInvalidOption, opt, typ, err)
}

// serverSet collects the places the server is named and checks that
// they agree.
type serverSet struct {
	host  string
	given []string
	clash bool
}

func (s *serverSet) add(where, host string) {
	if s.host != "" && s.host != host {
		s.clash = true
	}
	if s.host == "" {
		s.host = host
	}
	s.given = append(s.given, where)
}

func (s *serverSet) err(typ string) error {
	if !s.clash {
		return nil
	}
	return fmt.Errorf("%w: type=%s got the server twice with different values (%s); give it once",
		driver.ErrInvalidOption, typ, strings.Join(s.given, ", "))
}

// options returns the canonical options of c: the Docker-local form with
// the server in addr, so that Parse of its own output gives it back.
func (c config) options() map[string]string {
	out := map[string]string{optAddr: c.host, optDevice: ":" + c.export}
	o := slices.Clone(c.opts)
	if c.version != "" {
		o = append(o, mountOpt{key: "vers", value: c.version, hasValue: true})
	}
	if len(o) > 0 {
		out[optO] = o.String()
	}
	return out
}

// configOf reads the config back from a volume's canonical options.
func configOf(typ string, opts map[string]string) (config, error) {
	c, err := merge(typ, opts)
	if err != nil {
		return config{}, fmt.Errorf("stored options of the volume are invalid (%w); remove and create it again", err)
	}
	return c, nil
}

// candidates returns the versions to try, newest first.
func (c config) candidates(typ string) []string {
	switch {
	case c.version == "" && typ == TypeNFS4, c.version == "4":
		return versions[:3]
	case c.version == "":
		return versions
	default:
		return []string{c.version}
	}
}

// versionOf returns the version o asks for: "" for none, "4" for any 4.x.
func versionOf(o optList) (string, error) {
	var got []string
	for _, k := range []string{"vers", "nfsvers"} {
		for _, v := range o.values(k) {
			c, err := canonVersion(v)
			if err != nil {
				return "", fmt.Errorf("%s=%s: %w", k, v, err)
			}
			got = append(got, c)
		}
	}
	if minor := o.values("minorversion"); len(minor) > 0 {
		m := minor[len(minor)-1]
		if !slices.Contains([]string{"0", "1", "2"}, m) {
			return "", fmt.Errorf("minorversion=%s: want 0, 1 or 2", m)
		}
		if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "4") {
			return "", errors.New("minorversion needs vers=4; write vers=4." + m + " instead")
		}
		got = append(got, "4."+m)
	}
	if len(got) == 0 {
		return "", nil
	}
	last := got[len(got)-1]
	for _, g := range got {
		if g != last && !(g == "4" && strings.HasPrefix(last, "4.")) {
			return "", fmt.Errorf("the NFS version is given twice with different values (%s); give it once", strings.Join(got, ", "))
		}
	}
	return last, nil
}

func canonVersion(v string) (string, error) {
	switch v {
	case "3", "4", "4.0", "4.1", "4.2":
		return v, nil
	case "2":
		return "", errors.New("NFSv2 is obsolete and not supported; use 3 or 4")
	}
	return "", errors.New("want 3, 4, 4.0, 4.1 or 4.2 (or leave it out to negotiate)")
}

// canonHost checks a server given as a host name, an IPv4 address or an
// IPv6 address (brackets allowed) and returns it lower-case, IPs in their
// shortest form.
func canonHost(s string) (string, error) {
	h := strings.TrimSpace(s)
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		ip, err := netip.ParseAddr(h[1 : len(h)-1])
		if err != nil || !ip.Is6() {
			return "", errors.New("brackets hold an IPv6 address")
		}
		return ip.String(), nil
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().String(), nil
	}
	if strings.Contains(h, ":") {
		return "", errors.New("not a host name or IP address (write IPv6 addresses as 2001:db8::5 or [2001:db8::5])")
	}
	return canonHostName(h)
}

// canonHostName checks a DNS host name (RFC 1123, underscores allowed).
func canonHostName(h string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	if name == "" || len(name) > 253 {
		return "", errors.New("not a host name or IP address")
	}
	numeric := true
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("%q is not a valid host name", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return "", fmt.Errorf("%q is not a valid host name", h)
			}
			if r < '0' || r > '9' {
				numeric = false
			}
		}
	}
	if numeric {
		return "", fmt.Errorf("%q is not a valid IPv4 address", h)
	}
	return name, nil
}

// splitShare splits "host:/path", "[v6]:/path", ":/path" or "/path" into
// the canonical host ("" if absent) and the clean export path.
func splitShare(s string) (host, export string, err error) {
	rest := s
	switch {
	case strings.HasPrefix(s, "/"):
	case strings.HasPrefix(s, "["):
		i := strings.Index(s, "]:")
		if i < 0 {
			return "", "", errors.New("an IPv6 server is written [addr]:/path")
		}
		host, rest = s[:i+1], s[i+2:]
	default:
		i := strings.Index(s, ":")
		if i < 0 {
			return "", "", errors.New("no export path: write host:/path")
		}
		if j := strings.Index(s, ":/"); j > i {
			return "", "", errors.New("write an IPv6 server in brackets: [2001:db8::5]:/export")
		}
		host, rest = s[:i], s[i+1:]
	}
	if host != "" {
		if host, err = canonHost(host); err != nil {
			return "", "", err
		}
	}
	switch {
	case !strings.HasPrefix(rest, "/"):
		return "", "", errors.New("the export path must be absolute, starting with /")
	case strings.ContainsAny(rest, "\x00\n"):
		return "", "", errors.New("the export path contains a NUL or newline")
	case len(rest) > maxPathLen:
		return "", "", fmt.Errorf("the export path is longer than %d bytes", maxPathLen)
	}
	return host, path.Clean(rest), nil
}

func canonDevice(s string) (string, error) {
	h, p, err := splitShare(s)
	if err != nil {
		return "", err
	}
	if h == "" {
		return ":" + p, nil
	}
	return bracket(h) + ":" + p, nil
}

func canonShare(s string) (string, error) {
	h, p, err := splitShare(s)
	if err != nil {
		return "", err
	}
	if h == "" {
		return "", errors.New("no server: write host:/path")
	}
	return bracket(h) + ":" + p, nil
}

// bracket writes an IPv6 address in brackets, as in host:/path.
func bracket(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		return "[" + host + "]"
	}
	return host
}

func keep(s string) (string, error) { return s, nil }

// mountOpt is one item of o: key or key=value.
type mountOpt struct {
	key, value string
	hasValue   bool
}

func (m mountOpt) String() string {
	if m.hasValue {
		return m.key + "=" + m.value
	}
	return m.key
}

// optList is o, parsed, in the order given.
type optList []mountOpt

// parseO parses comma-separated mount options, dropping mount(8)-only
// words and refusing what is not an NFS option.
func parseO(s string) (optList, error) {
	var out optList
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, hasValue := strings.Cut(item, "=")
		m := mountOpt{key: k, value: v, hasValue: hasValue}
		if err := checkOpt(m); err != nil {
			return nil, err
		}
		if slices.Contains(mountOnly, k) || strings.HasPrefix(k, "x-") {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// checkOpt refuses items of o that cannot be right for an NFS mount.
func checkOpt(m mountOpt) error {
	switch {
	case m.key == "" || strings.IndexFunc(m.key, badKeyRune) >= 0:
		return fmt.Errorf("%q is not an option name", m.key)
	case strings.ContainsAny(m.value, "\x00\n"):
		return fmt.Errorf("%s: the value contains a NUL or newline", m.key)
	case driver.Sensitive(m.key):
		return fmt.Errorf("%s: NFS mounts take no key material, and every Docker user can read a volume's options with docker volume inspect; for authentication use sec=krb5 with the host's keytab", m.key)
	case refused[m.key] != "":
		return fmt.Errorf("%s: %s", m.key, refused[m.key])
	case slices.Contains(notNFS, m.key):
		return fmt.Errorf("%s is not an NFS mount option", m.key)
	case m.key == "port" || m.key == "mountport":
		if _, err := strconv.ParseUint(m.value, 10, 16); err != nil {
			return fmt.Errorf("%s=%s: want a port number", m.key, m.value)
		}
	case m.key == "proto" || m.key == "mountproto":
		if !slices.Contains([]string{"tcp", "udp", "rdma", "tcp6", "udp6", "rdma6"}, m.value) {
			return fmt.Errorf("%s=%s: want tcp, udp or rdma", m.key, m.value)
		}
	}
	return nil
}

func badKeyRune(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
}

func (l optList) String() string {
	parts := make([]string, len(l))
	for i, m := range l {
		parts[i] = m.String()
	}
	return strings.Join(parts, ",")
}

// values returns the values given for key, in order.
func (l optList) values(key string) []string {
	var out []string
	for _, m := range l {
		if m.key == key {
			out = append(out, m.value)
		}
	}
	return out
}

// last returns the value of key's last occurrence, which is the one the
// kernel uses.
func (l optList) last(key string) (string, bool) {
	v := l.values(key)
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// without returns l without the given keys.
func (l optList) without(keys ...string) optList {
	var out optList
	for _, m := range l {
		if !slices.Contains(keys, m.key) {
			out = append(out, m)
		}
	}
	return out
}

// redacted is l as text with the values of secret-looking options masked.
func (l optList) redacted() string {
	parts := make([]string, len(l))
	for i, m := range l {
		if m.hasValue {
			m.value = driver.Redact(map[string]string{m.key: m.value})[m.key]
		}
		parts[i] = m.String()
	}
	return strings.Join(parts, ",")
}
