package nfs

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// noAnswer is a mount(2) still blocked at the deadline.
type noAnswer struct {
	after time.Duration
}

func (e *noAnswer) Error() string {
	return fmt.Sprintf("no answer within %v", e.after.Round(100*time.Millisecond))
}

// outcome is a mount attempt and its error, nil if it mounted.
type outcome struct {
	attempt
	err error
}

// mountError builds the error of a failed Mount from its attempts, newest
// version first: the kernel's reason for the last one, the likely fix,
// and, when several versions were tried, what each gave.
func mountError(source, volume string, tried []outcome) error {
	last := tried[len(tried)-1]
	msg := fmt.Sprintf("mount nfs %s for volume %s: %s", source, volume, reason(last.err))
	if h := hint(tried); h != "" {
		msg += " (" + h + ")"
	}
	if len(tried) > 1 {
		msg += " [tried " + summary(tried) + "]"
	}
	return errors.New(msg)
}

// summary lists the versions tried with their errors, grouping versions
// that failed alike: "NFS 4.2, 4.1, 4.0: input/output error; 3: ...".
func summary(tried []outcome) string {
	var groups []string
	for i := 0; i < len(tried); {
		j := i
		vs := []string{}
		for j < len(tried) && reason(tried[j].err) == reason(tried[i].err) {
			vs = append(vs, tried[j].version)
			j++
		}
		groups = append(groups, joinVersions(vs)+": "+reason(tried[i].err))
		i = j
	}
	return "NFS " + strings.Join(groups, "; ")
}

// errnoOf returns the kernel's error number in err, or 0.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// reason is the kernel's reason for err in words.
func reason(err error) string {
	var late *noAnswer
	switch e := errnoOf(err); {
	case errors.As(err, &late):
		return late.Error()
	case e == unix.ENODEV:
		return "this kernel has no NFS client"
	case e != 0:
		return e.Error()
	default:
		return err.Error()
	}
}

// hint names the likely fix for the last of the failed attempts.
func hint(tried []outcome) string {
	f := tried[len(tried)-1]
	addr := net.JoinHostPort(f.addr.String(), f.port)
	var late *noAnswer
	if errors.As(f.err, &late) {
		return fmt.Sprintf("NFS %s to %s did not answer; check that the server is up and that a firewall lets TCP port %s through, or raise --nfs-timeout; if the mount completes later, holdfast removes it",
			f.version, f.addr, f.port)
	}
	switch errnoOf(f.err) {
	case unix.ENODEV:
		return `mount(2) knows no filesystem type "nfs": load the client on the host with "modprobe nfs", or install the kernel's NFS modules`
	case unix.ECONNREFUSED:
		if f.version == "3" && f.explicitPort == "" {
			return fmt.Sprintf("is an NFS server listening on %s? NFSv3 also needs rpcbind on port 111", addr)
		}
		return fmt.Sprintf("is an NFS server listening on %s?", addr)
	case unix.ETIMEDOUT:
		return fmt.Sprintf("the server did not answer; check that %s is up and that a firewall lets TCP port %s through", f.addr, f.port)
	case unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN:
		return fmt.Sprintf("no route to %s; check the address and this host's network", f.addr)
	case unix.EACCES:
		return fmt.Sprintf("the server refused access to %s; check that it exports it to this host (on Linux: /etc/exports, exportfs -v)", f.export)
	case unix.EPERM:
		return fmt.Sprintf("the server refused %s to this host, or the plugin lacks CAP_SYS_ADMIN; check the server's exports", f.export)
	case unix.ENOENT:
		return fmt.Sprintf("the server has no export %s; check the path (with NFSv4 it is relative to the server's pseudo-root)", f.export)
	case unix.EPROTONOSUPPORT:
		if len(tried) > 1 {
			return "the server offers none of the versions tried"
		}
		return fmt.Sprintf("the server does not offer NFS %s; leave vers out of o to negotiate, or pick a version it offers", f.version)
	case unix.EINVAL:
		return fmt.Sprintf("the kernel refused the mount options %s; check o (the kernel log, dmesg, names the option)", f.describe())
	case unix.EIO:
		return fmt.Sprintf("the server answered but the mount failed: it may not offer NFS %s, or may refuse the security flavour (sec=); the kernel log (dmesg) tells more", f.version)
	case unix.ESTALE:
		return "the export changed on the server; try again"
	}
	return ""
}

// fallback says what a failed attempt means for negotiation: next is true
// when the next older version is worth trying; toV3 when the remaining 4.x
// versions would fail alike and only NFSv3 is worth trying.
func fallback(err error) (next, toV3 bool) {
	switch errnoOf(err) {
	case unix.EPROTONOSUPPORT, unix.EINVAL, unix.EIO:
		// The server or this client lacks the version (EIO: a v3-only
		// server that answers NFSv4 with an RPC error).
		return true, false
	case unix.ECONNREFUSED, unix.ENOENT, unix.EACCES, unix.EPERM:
		// No NFSv4 on the port, or no such path in the v4 pseudo-root: an
		// NFSv3 server may still serve the export, as mount.nfs assumes.
		return false, true
	}
	return false, false
}
