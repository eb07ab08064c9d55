package crypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LUKS2 parameters. Keys are 64 random bytes, so a slow KDF adds nothing
// but seconds to every open: pbkdf2 at the minimum iteration count.
var luksFormatArgs = []string{
	"luksFormat", "--batch-mode", "--type", "luks2",
	"--cipher", "aes-xts-plain64", "--key-size", "512",
	"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
	"--key-file", "-",
}

// luksCipher describes the LUKS2 cipher in Status.
const luksCipher = "aes-xts-plain64, 512-bit key (LUKS2)"

// luksAvailable reports what this host lacks for LUKS2 volumes.
func luksAvailable() error {
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		return errors.New("device-mapper is not available in this kernel (no /dev/mapper/control)")
	}
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		return errors.New("cryptsetup is not installed (Debian: apt-get install cryptsetup-bin)")
	}
	return nil
}

// mappingName is the device-mapper name of the LUKS mapping of a volume
// whose backing file is file: the volume's name, shortened (dm names have
// at most 127 bytes), and the file's identity, so that two holdfast
// instances on one host never share the mapping of same-named volumes.
func mappingName(volume, file string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		return "", fmt.Errorf("stat backing file: %w", err)
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%d:%d", st.Dev, st.Ino))
	if len(volume) > 100 {
		volume = volume[:100]
	}
	return "holdfast-" + volume + "-" + hex.EncodeToString(sum[:4]), nil
}

func mappingPath(name string) string { return "/dev/mapper/" + name }

// mappingDevice returns the device node of the mapping name (/dev/dm-N),
// or "" when there is no such mapping: libdevmapper's /dev/mapper/NAME,
// or else the kernel's /dev/dm-N found through sysfs, since without udev
// (a container, the vmtest guest) a deferred close removes the
// /dev/mapper node at once while the mapping lives on until its last user
// lets go.
func mappingDevice(name string) string {
	if _, err := os.Stat(mappingPath(name)); err == nil {
		return mappingPath(name)
	}
	for _, dev := range Mappings("") {
		if dev.Name == name {
			return dev.Path
		}
	}
	return ""
}

// Mapping is a device-mapper mapping.
type Mapping struct {
	Name string // its device-mapper name
	Path string // its device node, /dev/dm-N
}

// Mappings lists the device-mapper mappings whose names start with
// prefix, from sysfs.
func Mappings(prefix string) []Mapping {
	files, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	var out []Mapping
	for _, f := range files {
		b, err := os.ReadFile(f)
		name := strings.TrimSpace(string(b))
		if err == nil && strings.HasPrefix(name, prefix) {
			out = append(out, Mapping{Name: name, Path: "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))})
		}
	}
	return out
}

// cryptsetup runs cryptsetup with the key on stdin, never in argv, as the
// step "cryptsetup COMMAND".
func (b *Backend) cryptsetup(ctx context.Context, key []byte, args ...string) error {
	if err := b.step("cryptsetup " + args[0]); err != nil {
		return err
	}
	return cryptsetup(ctx, key, args...)
}

// cryptsetup runs cryptsetup with the key on stdin, never in argv.
func cryptsetup(ctx context.Context, key []byte, args ...string) error {
	// cryptsetup keeps its locks here and warns when it is missing.
	os.MkdirAll("/run/cryptsetup", 0o700)
	cmd := exec.CommandContext(ctx, "cryptsetup", args...)
	cmd.Stdin = bytes.NewReader(key)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 2 && args[0] == "open" {
			return fmt.Errorf("%w: the key does not open this volume's LUKS header (%s)", errWrongKey, msg)
		}
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 5 {
			return fmt.Errorf("cryptsetup %s: %w: %s", args[0], errBusy, msg)
		}
		return fmt.Errorf("cryptsetup %s: %v: %s", args[0], err, msg)
	}
	return nil
}

// errBusy is cryptsetup's exit code 5: the device is in use.
var errBusy = errors.New("device busy")

// luksOpen maps dev as the decrypted device name and returns its path.
func (b *Backend) luksOpen(ctx context.Context, name, dev string, key []byte) (string, error) {
	if err := b.cryptsetup(ctx, key, "open", "--type", "luks2", "--key-file", "-", dev, name); err != nil {
		return "", err
	}
	return mappingPath(name), nil
}

// luksClose removes the mapping name if it exists. A mapping still in use
// (a filesystem detached lazily, which a process still holds) is closed
// when its last user lets go: a deferred close.
func (b *Backend) luksClose(ctx context.Context, name string) error {
	if mappingDevice(name) == "" {
		return nil
	}
	err := b.cryptsetup(ctx, nil, "close", name)
	if errors.Is(err, errBusy) {
		err = b.cryptsetup(ctx, nil, "close", "--deferred", name)
	}
	if err != nil && mappingDevice(name) == "" {
		// An earlier deferred close completed between the look and the
		// close (its last user let go): the mapping is gone, as asked.
		return nil
	}
	return err
}
