package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/admin"
)

// defaultSocket is the daemon's --socket default, which the commands share.
const defaultSocket = "/run/docker/plugins/holdfast.sock"

// managedSocketHelp says how to reach the managed plugin's socket.
const managedSocketHelp = `The managed plugin (docker plugin install) listens on
/run/docker/plugins/<plugin id>/holdfast.sock on the host:
  sudo holdfast --socket /run/docker/plugins/$(docker plugin inspect -f '{{.ID}}' holdfast)/holdfast.sock ls
The plugin's own binary is in its root filesystem, if holdfast is not installed
on the host: /var/lib/docker/plugins/<plugin id>/rootfs/bin/holdfast.`

// commands are the admin commands; with none, holdfast serves.
var commands = map[string]struct {
	usage, about string
	args         int // positional arguments
	run          func(c *cmdEnv) error
}{
	"ls":      {"ls [--format table|json]", "list the volumes: name, type, size, used, mounted, leases, created", 0, cmdLs},
	"backup":  {"backup NAME [-o FILE] [--freeze]", "write a tar stream (PAX) of the volume's files to FILE or stdout", 1, cmdBackup},
	"restore": {"restore NAME [-i FILE] [--opt k=v ...]", "create NAME with the options and unpack a backup from FILE or stdin into it", 1, cmdRestore},
	"leases":  {"leases NAME", "list the leases (dockerd's mounts, holdfast's own views) on a volume", 1, cmdLeases},
	"release": {"release NAME ID", "drop a lease dockerd will never release (its container is gone); the last one unmounts the volume", 2, cmdRelease},
}

// commandNames lists the commands for messages.
func commandNames() string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// cmdEnv is one command's parsed arguments and its standard streams.
type cmdEnv struct {
	ctx            context.Context
	client         *admin.Client
	args           []string
	format         string
	output, input  string
	freeze         bool
	opts           optList
	stdin          *os.File
	stdout, stderr *os.File
}

// optList collects --opt k=v, refusing what is not key=value.
type optList map[string]string

func (o optList) String() string { return "" }

func (o optList) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value: give --opt type=local, --opt size=1g, ...", kv)
	}
	if _, twice := o[k]; twice {
		return fmt.Errorf("%q is given twice: give each option once", k)
	}
	o[k] = v
	return nil
}

// runCommand runs the admin command name with args and returns the exit
// status: 0, 1 when the command failed, 2 for bad arguments.
func runCommand(name string, args []string, stdin, stdout, stderr *os.File) int {
	env, err := parseCommand(name, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "holdfast %s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	defer stop()
	env.ctx, env.stdin, env.stdout, env.stderr = ctx, stdin, stdout, stderr
	if err := commands[name].run(env); err != nil {
		fmt.Fprintf(stderr, "holdfast %s: %v\n", name, err)
		return 1
	}
	return 0
}

// parseCommand reads a command's flags, which may come before, between or
// after its positional arguments.
func parseCommand(name string, args []string, stderr io.Writer) (*cmdEnv, error) {
	cmd := commands[name]
	env := &cmdEnv{opts: optList{}}
	fs := flag.NewFlagSet("holdfast "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, by runCommand
	fs.Usage = func() {}
	usage := func() {
		fmt.Fprintf(stderr, "Usage: holdfast %s\n\n%s. Root only: it talks to the running\nholdfast over its socket.\n\n%s\n\nFlags:\n", cmd.usage, cmd.about, managedSocketHelp)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
	}
	socket := fs.String("socket", defaultSocket, "Unix `path` of the running holdfast's socket (HOLDFAST_SOCKET)")
	switch name {
	case "ls":
		fs.StringVar(&env.format, "format", "table", "output `format`: table or json")
	case "backup":
		fs.StringVar(&env.output, "o", "", "write the stream to `FILE` (removed if the backup fails) instead of stdout")
		fs.BoolVar(&env.freeze, "freeze", false, "hold loop and crypt volumes frozen (writers wait) for the whole transfer where no point-in-time copy can be taken")
	case "restore":
		fs.StringVar(&env.input, "i", "", "read the stream from `FILE` instead of stdin")
		fs.Var(env.opts, "opt", "an option of the new volume, `key=value` as docker volume create --opt takes it; repeat it for each")
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage()
			}
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if err := checkArgs(name, cmd.usage, cmd.args, pos); err != nil {
		return nil, err
	}
	if name == "ls" && env.format != "table" && env.format != "json" {
		return nil, fmt.Errorf("--format %q: want table or json", env.format)
	}
	sock := *socket
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "socket" })
	if v, ok := os.LookupEnv("HOLDFAST_SOCKET"); ok && !given {
		sock = v
	}
	if !strings.HasPrefix(sock, "/") {
		return nil, fmt.Errorf("--socket %q: want an absolute path", sock)
	}
	env.client, env.args = admin.NewClient(sock), pos
	return env, nil
}

// checkArgs checks the number of positional arguments.
func checkArgs(name, usage string, want int, pos []string) error {
	switch {
	case len(pos) < want && want == 2 && len(pos) == 1:
		return fmt.Errorf("missing the lease ID: usage: holdfast %s (holdfast leases %s lists them)", usage, pos[0])
	case len(pos) < want:
		return fmt.Errorf("missing the volume NAME: usage: holdfast %s", usage)
	case len(pos) > want:
		return fmt.Errorf("unexpected argument %q: usage: holdfast %s", pos[want], usage)
	}
	for _, p := range pos {
		if p == "" {
			return fmt.Errorf("an empty argument: usage: holdfast %s", usage)
		}
	}
	return nil
}

func cmdLs(c *cmdEnv) error {
	vols, err := c.client.Volumes(c.ctx)
	if err != nil {
		return err
	}
	if c.format == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(vols)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tSIZE\tUSED\tMOUNTED\tLEASES\tCREATED")
	for _, v := range vols {
		size, used := "-", "-"
		if v.Size > 0 {
			size = units.BytesSize(float64(v.Size))
		}
		if v.Used >= 0 {
			used = units.BytesSize(float64(v.Used))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%d\t%s\n", v.Name, v.Type, size, used, v.Mounted, v.Leases, v.Created.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

func cmdLeases(c *cmdEnv) error {
	leases, err := c.client.Leases(c.ctx, c.args[0])
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSINCE\tHELD BY")
	for _, l := range leases {
		by := "dockerd (a container's mount)"
		if strings.HasPrefix(l.ID, "holdfast-") {
			by = "holdfast (a backup, restore or clone in progress)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.ID, l.Since.Local().Format(time.RFC3339), by)
	}
	return tw.Flush()
}

func cmdRelease(c *cmdEnv) error {
	did, err := c.client.Release(c.ctx, c.args[0], c.args[1])
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, did)
	return nil
}

func cmdBackup(c *cmdEnv) (err error) {
	name := c.args[0]
	out := c.stdout
	if c.output == "" && isTerminal(out) {
		return fmt.Errorf("refusing to write a tar stream to a terminal: give -o FILE, or redirect stdout (holdfast backup %s > %s.tar)", name, name)
	}
	if c.output != "" {
		var f *os.File
		f, err = os.OpenFile(c.output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("-o: %w", err)
		}
		out = f
		defer func() {
			if cerr := f.Sync(); err == nil && cerr != nil {
				err = fmt.Errorf("-o %s: %w", c.output, cerr)
			}
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("-o %s: %w", c.output, cerr)
			}
			if err != nil {
				os.Remove(c.output)
				err = fmt.Errorf("%w (%s removed)", err, c.output)
			}
		}()
	}
	p := newProgress(c.stderr, "backup "+name)
	note, err := c.client.Backup(c.ctx, name, c.freeze, p.writer(out))
	p.done(err)
	if err != nil {
		return err
	}
	if note != "" {
		fmt.Fprintf(c.stderr, "holdfast backup %s: %s\n", name, note)
	}
	return nil
}

func cmdRestore(c *cmdEnv) error {
	name := c.args[0]
	in := c.stdin
	if c.input != "" {
		f, err := os.Open(c.input)
		if err != nil {
			return fmt.Errorf("-i: %w: give a file holdfast backup wrote", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return fmt.Errorf("-i %s is a directory: give a file holdfast backup wrote", c.input)
		}
		in = f
	} else if isTerminal(in) {
		return fmt.Errorf("no backup to read: give -i FILE, or pipe one in (holdfast backup %s | holdfast restore %s)", name, name)
	}
	p := newProgress(c.stderr, "restore "+name)
	res, err := c.client.Restore(c.ctx, name, c.opts, p.reader(in))
	p.done(err)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "restored %s: %d entries, %s of file data\n", name, res.Entries, units.BytesSize(float64(res.Bytes)))
	return nil
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
