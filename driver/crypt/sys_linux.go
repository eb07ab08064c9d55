package crypt

import (
	"bytes"
	"context"
	"os/exec"

	"golang.org/x/sys/unix"
)

const (
	bind        = unix.MS_BIND
	nodevNosuid = unix.MS_NODEV | unix.MS_NOSUID
)

// runCmd runs a program without input and returns its combined output.
func runCmd(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
