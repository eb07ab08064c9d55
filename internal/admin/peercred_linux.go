package admin

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

type credKey struct{}

// ConnContext, as an http.Server's ConnContext, records the peer's
// credentials (SO_PEERCRED) of each Unix socket connection for RootOnly.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	cred, err := peerCred(c)
	if err != nil {
		return context.WithValue(ctx, credKey{}, err)
	}
	return context.WithValue(ctx, credKey{}, cred)
}

func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("connection is %T, not a Unix socket: its peer cannot be known", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}

// checkRoot says why the request's peer may not use the admin protocol,
// or nil for root.
func checkRoot(ctx context.Context) error {
	switch v := ctx.Value(credKey{}).(type) {
	case *unix.Ucred:
		if v.Uid == 0 {
			return nil
		}
		return fmt.Errorf("holdfast admin commands are for root only (you are uid %d, pid %d): run them with sudo", v.Uid, v.Pid)
	case error:
		return fmt.Errorf("holdfast admin commands are for root only, and the caller is unknown: %w", v)
	default:
		return fmt.Errorf("holdfast admin commands are for root only, and this server does not record callers (no admin.ConnContext)")
	}
}
