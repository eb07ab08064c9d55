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
	"slices"
	"strings"
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

// mappingName is the device-mapper name of a volume's LUKS mapping; dm
// names are shorter than volume names may be.
func mappingName(volume string) string {
	if len(volume) <= 100 {
		return "holdfast-" + volume
	}
	sum := sha256.Sum256([]byte(volume))
	return "holdfast-" + volume[:80] + "-" + hex.EncodeToString(sum[:8])
}

func mappingPath(volume string) string { return "/dev/mapper/" + mappingName(volume) }

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
		return fmt.Errorf("cryptsetup %s: %v: %s", args[0], err, msg)
	}
	return nil
}

// luksFormat writes a LUKS2 header for key to file.
func luksFormat(ctx context.Context, file string, key []byte) error {
	return cryptsetup(ctx, key, slices.Concat(luksFormatArgs, []string{file})...)
}

// luksOpen maps dev as the volume's decrypted device and returns its path.
func luksOpen(ctx context.Context, volume, dev string, key []byte) (string, error) {
	if err := cryptsetup(ctx, key, "open", "--type", "luks2", "--key-file", "-", dev, mappingName(volume)); err != nil {
		return "", err
	}
	return mappingPath(volume), nil
}

// luksClose removes the volume's mapping if it exists.
func luksClose(ctx context.Context, volume string) error {
	if _, err := os.Stat(mappingPath(volume)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return cryptsetup(ctx, nil, "close", mappingName(volume))
}
