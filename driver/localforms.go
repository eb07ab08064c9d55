package driver

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file maps the options of Docker's built-in local driver (type,
// device, o, size) onto holdfast's typed options, so that a volume written
// for driver: local works with driver: holdfast wherever holdfast has that
// kind of storage, and stores the same canonical options whichever spelling
// was used. What holdfast does not do is refused with the alternative.

// typeAliases maps the local driver's type names to holdfast's.
var typeAliases = map[string]string{
	// type=none o=bind device=/path is the local driver's bind mount.
	"none": TypeBind,
}

// CanonType returns holdfast's name for a type given with --opt type=.
func CanonType(typ string) string {
	if t, ok := typeAliases[typ]; ok {
		return t
	}
	return typ
}

// cifsTypes are the local driver's SMB types.
var cifsTypes = []string{"cifs", "smb3", "smbfs"}

// unknownType is the error for a type holdfast has no backend for: for the
// local driver's device and network filesystems it names driver: local.
func unknownType(typ string, raw map[string]string, known []string) error {
	switch {
	case slices.Contains(cifsTypes, typ):
		return errorf(ErrUnknownType, "type=%s: CIFS/SMB volumes are not supported by holdfast; use --driver local (driver: local in compose), which mounts them with the same options", typ)
	case strings.HasPrefix(raw["device"], "/dev/") || slices.Contains(deviceFilesystems, typ):
		device := ""
		if raw["device"] != "" {
			device = " (device=" + raw["device"] + ")"
		}
		return errorf(ErrUnknownType, "type=%s: holdfast does not mount block devices or arbitrary filesystems%s; use --driver local (driver: local in compose) for that, or type=loop (fs=ext4 or fs=xfs, with a size) for a filesystem of its own that holdfast makes and manages, type=crypt for an encrypted one; known types are %s", typ, device, strings.Join(known, ", "))
	}
	return errorf(ErrUnknownType, "unknown volume type %q: known types are %s (and type=none for a bind mount, as with Docker's local driver)", typ, strings.Join(known, ", "))
}

// deviceFilesystems are filesystems Docker's local driver mounts from a
// device, which holdfast does not serve.
var deviceFilesystems = []string{"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs", "ntfs3", "f2fs", "zfs", "squashfs", "iso9660", "overlay", "fuse", "sshfs", "glusterfs", "ceph"}

// Messages for options holdfast refuses wherever they appear.
const (
	encryptionHint = "encryption= is not a mount option (Docker's local driver hands it to the kernel, which refuses it); holdfast encrypts with type=crypt size=…, and a tmpfs is in RAM and never written to disk except to swap"
)

// mountWord is one item of a local driver o= list: key or key=value.
type mountWord struct {
	key, value string
	hasValue   bool
}

func (w mountWord) String() string {
	if w.hasValue {
		return w.key + "=" + w.value
	}
	return w.key
}

// splitO splits the comma-separated o= list, dropping empty items.
func splitO(o string) []mountWord {
	var out []mountWord
	for item := range strings.SplitSeq(o, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		out = append(out, mountWord{key: strings.TrimSpace(k), value: v, hasValue: ok})
	}
	return out
}

// formParser collects the typed options of one volume from the top level
// and from o=, refusing the same option given twice with different values.
type formParser struct {
	typ   string
	specs map[string]Option
	// out holds the canonical values; where says how each was given.
	out   map[string]string
	where map[string]string
	// unknown collects the words of o the type does not take.
	unknown []string
}

func newFormParser(typ string, specs []Option) *formParser {
	p := &formParser{typ: typ, specs: map[string]Option{}, out: map[string]string{}, where: map[string]string{}}
	for _, s := range specs {
		p.specs[s.Name] = s
	}
	return p
}

// set records name=value, given as where (e.g. "o=size=64m"). A value that
// is LeftToDefault asks for nothing and gives way to one written out.
func (p *formParser) set(name, value, where string) error {
	s := p.specs[name]
	c, err := s.Canon(value)
	if err != nil {
		return fmt.Errorf("%w %s: want %s: %v", ErrInvalidOption, where, s.Form, err)
	}
	old, seen := p.out[name]
	switch {
	case !seen || old == LeftToDefault:
	case c == LeftToDefault || c == old:
		return nil
	default:
		return fmt.Errorf("%w: type=%s got %s twice with different values (%s, %s); give it once",
			ErrInvalidOption, p.typ, name, p.where[name], where)
	}
	p.out[name] = c
	p.where[name] = where
	return nil
}

// top records the options given at the top level, refusing unknown ones.
func (p *formParser) top(raw map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if _, ok := p.specs[k]; !ok {
			// device, o and type are taken apart before this.
			names := slices.Compact(slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(p.specs)), "device", "o", "type"))))
			return fmt.Errorf("%w %q for type=%s: valid options are %s", ErrInvalidOption, k, p.typ, strings.Join(names, ", "))
		}
		if err := p.set(k, raw[k], k+"="+strconv.Quote(raw[k])); err != nil {
			return err
		}
	}
	return nil
}

// unknownWord notes a word of o the type does not take. Only the key is
// kept: the value may be a secret.
func (p *formParser) unknownWord(w mountWord) {
	p.unknown = append(p.unknown, w.key)
}

// finish refuses the unknown words of o, listing them and what the type
// takes, and returns the canonical options without flags set to false.
func (p *formParser) finish(takes string) (map[string]string, error) {
	if len(p.unknown) > 0 {
		return nil, fmt.Errorf("%w o for type=%s: holdfast does not take %s here (nothing is dropped silently); o takes %s",
			ErrInvalidOption, p.typ, strings.Join(p.unknown, ", "), takes)
	}
	for k, v := range p.out {
		if v == "false" && p.specs[k].Form == boolForm {
			delete(p.out, k)
		}
	}
	return p.out, nil
}

const boolForm = "true or false"

// boolOption is a mount flag as a typed option: "true" is stored, "false"
// is the same as leaving it out.
func boolOption(name string) Option {
	return Option{Name: name, Form: boolForm, Canon: CanonEnum("true", "false")}
}

// Flags of the local driver's o= that are typed options of holdfast.
var (
	OptNoexec = boolOption("noexec")
	OptRO     = boolOption("ro")
)

// OptNrInodes is tmpfs's limit on the number of files.
var OptNrInodes = Option{Name: "nr_inodes", Form: "a number of inodes such as 10000 or 64k (0: no limit)", Canon: canonCount}

var countSyntax = regexp.MustCompile(`^([0-9]+)([kKmMgG]?)$`)

// canonCount accepts a count with the kernel's binary suffixes (k, m, g),
// as the tmpfs nr_inodes option does, and returns it as a number.
func canonCount(s string) (string, error) {
	m := countSyntax.FindStringSubmatch(s)
	if m == nil {
		if strings.HasSuffix(s, "%") {
			return "", errors.New("a percentage of RAM changes with the host; give a number")
		}
		return "", errors.New("not a number")
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	shift := uint(0)
	if m[2] != "" {
		shift = 10 * uint(strings.Index("kmg", strings.ToLower(m[2]))+1)
	}
	if err != nil || n > (1<<63-1)>>shift {
		return "", errors.New("too large")
	}
	return strconv.FormatUint(n<<shift, 10), nil
}

// canonTmpfsSize is CanonSize with a clear word for tmpfs's percentages.
func canonTmpfsSize(s string) (string, error) {
	if strings.HasSuffix(s, "%") {
		return "", errors.New("a percentage of RAM changes with the host; give an absolute size such as 100m")
	}
	return CanonSize(s)
}
