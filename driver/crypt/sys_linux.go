package crypt

import "golang.org/x/sys/unix"

const (
	bind        = unix.MS_BIND
	nodevNosuid = unix.MS_NODEV | unix.MS_NOSUID
)
