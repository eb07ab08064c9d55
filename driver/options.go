package driver

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/go-units"

	"github.com/holdfast/holdfast/internal/volfs"
)

// ErrInvalidOption is wrapped by every option validation error.
var ErrInvalidOption = errors.New("invalid option")

// Option describes one option a volume type accepts.
type Option struct {
	// Name is the key given with --opt.
	Name string
	// Form describes valid values for error messages, e.g. "a size such as 100m".
	Form string
	// Default is used when the option is absent; "" means no default.
	Default string
	// Required options must be given.
	Required bool
	// Canon checks a value and returns its canonical form, so that equal
	// settings compare equal however they were written.
	Canon func(string) (string, error)
}

// Common options, applied to the root directory of every directory-backed type.
var (
	OptUID  = Option{Name: "uid", Form: "a numeric user id such as 1000", Canon: canonID}
	OptGID  = Option{Name: "gid", Form: "a numeric group id such as 1000", Canon: canonID}
	OptMode = Option{Name: "mode", Form: "an octal mode such as 0750 or 1770", Canon: canonMode}
)

// Sensitive reports whether an option name suggests key material.
// Values of such options are never logged or echoed in errors.
func Sensitive(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"key", "pass", "secret", "token", "cred"} {
		if strings.Contains(n, s) && n != "keyfile" {
			return true
		}
	}
	return false
}

// Redact returns a copy of opts with the values of sensitive options
// masked, including those inside a list of mount options such as
// o=vers=4,password=x.
func Redact(opts map[string]string) map[string]string {
	out := make(map[string]string, len(opts))
	for k, v := range opts {
		if Sensitive(k) {
			v = masked
		} else if strings.Contains(v, "=") {
			v = redactList(v)
		}
		out[k] = v
	}
	return out
}

const masked = "********"

// redactList masks the sensitive values of a comma-separated k=v list.
func redactList(list string) string {
	items := strings.Split(list, ",")
	for i, item := range items {
		if k, _, ok := strings.Cut(item, "="); ok && Sensitive(strings.TrimSpace(k)) {
			items[i] = k + "=" + masked
		}
	}
	return strings.Join(items, ",")
}

// ParseOptions checks raw against specs and returns the canonical options,
// defaults filled in. typ names the volume type in errors.
func ParseOptions(typ string, raw map[string]string, specs []Option) (map[string]string, error) {
	known := make(map[string]Option, len(specs))
	for _, s := range specs {
		known[s.Name] = s
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if _, ok := known[k]; !ok {
			return nil, fmt.Errorf("%w %q for type=%s: valid options are %s",
				ErrInvalidOption, k, typ, optionNames(specs))
		}
	}
	out := make(map[string]string, len(specs))
	for _, s := range specs {
		v, given := raw[s.Name]
		if !given {
			if s.Required {
				return nil, fmt.Errorf("%w: type=%s requires option %q (%s)", ErrInvalidOption, typ, s.Name, s.Form)
			}
			if s.Default == "" {
				continue
			}
			v = s.Default
		}
		c, err := s.Canon(v)
		if err != nil {
			return nil, fmt.Errorf("%w %s=%q: want %s: %v", ErrInvalidOption, s.Name, v, s.Form, err)
		}
		out[s.Name] = c
	}
	return out, nil
}

// optionNames lists the options of specs, plus "type", for error messages.
func optionNames(specs []Option) string {
	names := []string{"type"}
	for _, s := range specs {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// LeftToDefault is the canonical value of an option a Create left out
// whose default is a setting of the plugin that may change (tmpfs size,
// from --tmpfs-size). The backend's Create replaces it with the value in
// force then, which the volume keeps for good, across restarts with
// another default. A later Create without the option (Swarm repeats Create
// before every task) asks for nothing about it, so DiffOptions matches a
// requested LeftToDefault with whatever the existing volume has: filling
// in today's default there would turn every change of the setting into a
// conflict. A value written out is compared as usual. Given as a value
// ("size=default") it means the same as leaving the option out.
const LeftToDefault = "default"

// CanonOrDefault returns a Canon func that accepts LeftToDefault besides
// what canon accepts.
func CanonOrDefault(canon func(string) (string, error)) func(string) (string, error) {
	return func(s string) (string, error) {
		if s == LeftToDefault {
			return s, nil
		}
		return canon(s)
	}
}

// DiffOptions lists, sorted, the options whose values differ between a,
// an existing volume's, and b, requested, as "name: existing X, requested
// Y". A requested LeftToDefault matches any existing value.
func DiffOptions(a, b map[string]string) []string {
	var diff []string
	keys := slices.Sorted(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		av, aok := a[k]
		bv, bok := b[k]
		if aok == bok && av == bv || bok && bv == LeftToDefault {
			continue
		}
		diff = append(diff, fmt.Sprintf("%s: existing %s, requested %s", k, showValue(k, av, aok), showValue(k, bv, bok)))
	}
	return diff
}

func showValue(k, v string, ok bool) string {
	switch {
	case !ok:
		return "unset"
	case Sensitive(k):
		return "********"
	default:
		return strconv.Quote(v)
	}
}

func canonID(s string) (string, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return "", errors.New("not a number from 0 to 4294967294")
	}
	return strconv.FormatUint(n, 10), nil
}

func canonMode(s string) (string, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return "", errors.New("not an octal number from 0 to 7777")
	}
	return fmt.Sprintf("%04o", n), nil
}

// sizeSyntax is Docker's size syntax: a decimal number, an optional space
// and an optional unit. units.RAMInBytes also takes exponents and hex
// floats ("1e30", "0x1p4"), which nobody means as a size.
var sizeSyntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]*)?|\.[0-9]+) ?([kKmMgGtTpP]?)(?:[iI]?[bB])?$`)

// CanonSize accepts Docker's size syntax (512k, 100m, 1g, or bytes) and
// returns the size in bytes; it must be greater than zero and fit in 63
// bits (at most 8191p).
func CanonSize(s string) (string, error) {
	m := sizeSyntax.FindStringSubmatch(s)
	if m == nil {
		return "", errors.New("not a size")
	}
	// RAMInBytes converts an overflowing float to int64, which gives a
	// negative or a saturated number depending on the CPU: check first.
	if approxBytes(m[1], m[2]) >= 1<<63 {
		return "", errors.New("too large: sizes go up to 8191p")
	}
	n, err := units.RAMInBytes(s)
	if err != nil {
		return "", errors.New("not a size")
	}
	if n <= 0 {
		return "", errors.New("must be greater than zero")
	}
	return strconv.FormatInt(n, 10), nil
}

// approxBytes is the size num unit (unit one of kKmMgGtTpP or empty) in
// bytes, as a float that does not overflow.
func approxBytes(num, unit string) float64 {
	f, _ := strconv.ParseFloat(num, 64)
	if unit == "" {
		return f
	}
	return f * math.Pow(1024, float64(strings.Index("kmgtp", strings.ToLower(unit))+1))
}

// CanonEnum returns a Canon func accepting only the given values.
func CanonEnum(values ...string) func(string) (string, error) {
	return func(s string) (string, error) {
		if slices.Contains(values, s) {
			return s, nil
		}
		return "", fmt.Errorf("one of %s", strings.Join(values, ", "))
	}
}

// ModeOf returns the mode option as a number, or def when it is unset.
func ModeOf(opts map[string]string, def uint32) uint32 {
	if m, ok := opts["mode"]; ok {
		n, _ := strconv.ParseUint(m, 8, 32)
		return uint32(n)
	}
	return def
}

// IntOption returns opts[name] as a number, or def when it is unset.
func IntOption(opts map[string]string, name string, def int64) int64 {
	if v, ok := opts[name]; ok {
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return def
}

// OwnerOf returns the uid, gid and mode options, defaultMode when mode is
// unset.
func OwnerOf(opts map[string]string, defaultMode uint32) volfs.Owner {
	return volfs.Owner{UID: int(IntOption(opts, "uid", -1)), GID: int(IntOption(opts, "gid", -1)), Mode: ModeOf(opts, defaultMode)}
}
