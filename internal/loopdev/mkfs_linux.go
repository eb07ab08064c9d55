package loopdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Filesystems Mkfs makes.
const (
	FSExt4 = "ext4"
	FSXFS  = "xfs"
)

// Mkfs makes filesystem fs (FSExt4 or FSXFS) on dev, a loop device or an
// image file. ext4 gets 4 KiB blocks (fscrypt needs the page size), no
// reserved blocks (the size limit is the user's) and ext4Features added
// to its defaults (e.g. "encrypt"). Neither discards: on a loop device a
// discard would punch the allocated image full of holes.
func Mkfs(ctx context.Context, dev, fs string, ext4Features ...string) error {
	prog, args := "mkfs.ext4", []string{"-q", "-F", "-b", "4096", "-m", "0", "-E", "nodiscard"}
	if len(ext4Features) > 0 {
		args = append(args, "-O", strings.Join(ext4Features, ","))
	}
	switch fs {
	case FSExt4:
	case FSXFS:
		prog, args = "mkfs.xfs", []string{"-q", "-f", "-K"}
	default:
		return fmt.Errorf("mkfs: unknown filesystem %q (want %s or %s)", fs, FSExt4, FSXFS)
	}
	cmd := exec.CommandContext(ctx, prog, append(args, dev)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			pkg := map[string]string{FSExt4: "e2fsprogs", FSXFS: "xfsprogs"}[fs]
			return fmt.Errorf("%s is not installed (Debian: apt-get install %s): %w", prog, pkg, err)
		}
		msg, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		return fmt.Errorf("%s: %w: %s", prog, err, msg)
	}
	return nil
}
