package nfs

import (
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// attempt is one mount(2) call: one NFS version at one address.
type attempt struct {
	version string
	addr    netip.Addr
	export  string
	source  string
	flags   uintptr
	data    string
	// words are the mount flags as option words, for Status and messages.
	words []string
	// port is where the NFS service is expected; explicitPort is the port
	// o gives, if any.
	port, explicitPort string
}

// attempt assembles the mount(2) call for version at addr. The kernel
// needs the server's address in addr= (it resolves nothing itself); the
// source keeps the name the user gave, as mount.nfs does, so that
// /proc/mounts shows it.
func (c config) attempt(version string, addr netip.Addr) attempt {
	flags, words, rest := mountFlags(c.opts)
	a := attempt{
		version: version,
		addr:    addr,
		export:  c.export,
		source:  bracket(c.host) + ":" + c.export,
		flags:   flags,
		data:    mountData(rest, version, addr),
		words:   words,
		port:    "2049",
	}
	if p, ok := c.opts.last("port"); ok && p != "0" {
		a.port, a.explicitPort = p, p
	}
	return a
}

// describe is the attempt's options as Status shows them: flags, then
// data, secrets masked.
func (a attempt) describe() string {
	o, _ := parseO(strings.Join(append(append([]string{}, a.words...), a.data), ","))
	return o.redacted()
}

// defaultFlags are the mount flags of every NFS volume unless o says suid
// or dev: files on a server must not bring setuid programs or device nodes
// to this host. The same defaults as holdfast's tmpfs volumes.
const defaultFlags = unix.MS_NOSUID | unix.MS_NODEV

// flagWord is a mount option that mount(8) turns into a mount(2) flag.
// The NFS parser of the kernel refuses most of them in the data string.
type flagWord struct {
	set, clear uintptr
}

var flagWords = map[string]flagWord{
	"ro":            {set: unix.MS_RDONLY},
	"rw":            {clear: unix.MS_RDONLY},
	"nosuid":        {set: unix.MS_NOSUID},
	"suid":          {clear: unix.MS_NOSUID},
	"nodev":         {set: unix.MS_NODEV},
	"dev":           {clear: unix.MS_NODEV},
	"noexec":        {set: unix.MS_NOEXEC},
	"exec":          {clear: unix.MS_NOEXEC},
	"sync":          {set: unix.MS_SYNCHRONOUS},
	"async":         {clear: unix.MS_SYNCHRONOUS},
	"dirsync":       {set: unix.MS_DIRSYNC},
	"noatime":       {set: unix.MS_NOATIME},
	"atime":         {clear: unix.MS_NOATIME},
	"nodiratime":    {set: unix.MS_NODIRATIME},
	"diratime":      {clear: unix.MS_NODIRATIME},
	"relatime":      {set: unix.MS_RELATIME},
	"norelatime":    {clear: unix.MS_RELATIME},
	"strictatime":   {set: unix.MS_STRICTATIME},
	"nostrictatime": {clear: unix.MS_STRICTATIME},
	"lazytime":      {set: unix.MS_LAZYTIME},
	"nolazytime":    {clear: unix.MS_LAZYTIME},
}

// flagNames lists the flags in the order Status shows them.
var flagNames = []struct {
	bit     uintptr
	on, off string
	showOff bool
}{
	{bit: unix.MS_RDONLY, on: "ro", off: "rw", showOff: true},
	{bit: unix.MS_NOSUID, on: "nosuid"},
	{bit: unix.MS_NODEV, on: "nodev"},
	{bit: unix.MS_NOEXEC, on: "noexec"},
	{bit: unix.MS_SYNCHRONOUS, on: "sync"},
	{bit: unix.MS_DIRSYNC, on: "dirsync"},
	{bit: unix.MS_NOATIME, on: "noatime"},
	{bit: unix.MS_NODIRATIME, on: "nodiratime"},
	{bit: unix.MS_RELATIME, on: "relatime"},
	{bit: unix.MS_STRICTATIME, on: "strictatime"},
	{bit: unix.MS_LAZYTIME, on: "lazytime"},
}

// mountFlags splits the flag words off opts, applies them in order to the
// defaults, and returns the flags, their words and the remaining options.
func mountFlags(opts optList) (uintptr, []string, optList) {
	flags := uintptr(defaultFlags)
	var rest optList
	for _, m := range opts {
		w, ok := flagWords[m.key]
		if !ok || m.hasValue {
			rest = append(rest, m)
			continue
		}
		flags = flags&^w.clear | w.set
	}
	return flags, flagStrings(flags), rest
}

// flagStrings names the flags set, with rw or ro first.
func flagStrings(flags uintptr) []string {
	var words []string
	for _, f := range flagNames {
		switch {
		case flags&f.bit != 0:
			words = append(words, f.on)
		case f.showOff:
			words = append(words, f.off)
		}
	}
	return slices.Clip(words)
}
