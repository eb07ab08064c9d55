package driver

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// This file maps the options of Docker's built-in local driver (type,
// device, o, size) onto holdfast's typed options, so that a volume written
// for driver: local works with driver: holdfast wherever holdfast has that
// kind of storage, and stores the same canonical options whichever spelling
// was used. What holdfast does not do is refused with the alternative.

// TypeBind is the type of volumes whose storage is an existing host
// directory: Docker's local driver's type=none o=bind device=/path.
const TypeBind = "bind"

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
	// EncryptionHint answers encryption= in o=.
	EncryptionHint = "encryption= is not a mount option (Docker's local driver hands it to the kernel, which refuses it); holdfast encrypts with type=crypt size=…, and a tmpfs is in RAM and never written to disk except to swap"
)

// MountWord is one item of a local driver o= list: key or key=value.
type MountWord struct {
	Key, Value string
	// HasValue says the word was key=value, even with an empty value.
	HasValue bool
}

// String is the word as written.
func (w MountWord) String() string {
	if w.HasValue {
		return w.Key + "=" + w.Value
	}
	return w.Key
}

// SplitO splits the comma-separated o= list, dropping empty items.
func SplitO(o string) []MountWord {
	var out []MountWord
	for item := range strings.SplitSeq(o, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		out = append(out, MountWord{Key: strings.TrimSpace(k), Value: v, HasValue: ok})
	}
	return out
}

// FormParser collects the typed options of one volume from the top level
// and from o=, refusing the same option given twice with different values.
type FormParser struct {
	typ   string
	specs map[string]Option
	// out holds the canonical values; where says how each was given.
	out   map[string]string
	where map[string]string
	// unknown collects the words of o the type does not take.
	unknown []string
}

// NewFormParser returns a parser for the options specs of type typ.
func NewFormParser(typ string, specs []Option) *FormParser {
	p := &FormParser{typ: typ, specs: map[string]Option{}, out: map[string]string{}, where: map[string]string{}}
	for _, s := range specs {
		p.specs[s.Name] = s
	}
	return p
}

// Set records name=value, given as where (e.g. "o=size=64m"). A value that
// is LeftToDefault asks for nothing and gives way to one written out.
func (p *FormParser) Set(name, value, where string) error {
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

// Top records the options given at the top level, refusing unknown ones.
func (p *FormParser) Top(raw map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if _, ok := p.specs[k]; !ok {
			// device, o and type are taken apart before this.
			names := slices.Compact(slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(p.specs)), "device", "o", "type"))))
			return fmt.Errorf("%w %q for type=%s: valid options are %s", ErrInvalidOption, k, p.typ, strings.Join(names, ", "))
		}
		if err := p.Set(k, raw[k], k+"="+strconv.Quote(raw[k])); err != nil {
			return err
		}
	}
	return nil
}

// Unknown notes a word of o the type does not take. Only the key is
// kept: the value may be a secret.
func (p *FormParser) Unknown(w MountWord) {
	p.unknown = append(p.unknown, w.Key)
}

// Finish refuses the unknown words of o, listing them and what the type
// takes, and returns the canonical options without flags set to false.
func (p *FormParser) Finish(takes string) (map[string]string, error) {
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

// BoolOption is a mount flag as a typed option: "true" is stored, "false"
// is the same as leaving it out.
func BoolOption(name string) Option {
	return Option{Name: name, Form: boolForm, Canon: CanonEnum("true", "false")}
}

// Flags of the local driver's o= that are typed options of holdfast.
var (
	OptNoexec = BoolOption("noexec")
	OptRO     = BoolOption("ro")
)

// CanonAbsSize is CanonSize with a clear word for tmpfs's percentages.
func CanonAbsSize(s string) (string, error) {
	if strings.HasSuffix(s, "%") {
		return "", errors.New("a percentage of RAM changes with the host; give an absolute size such as 100m")
	}
	return CanonSize(s)
}
