// Command holdfast is a Docker volume plugin: local, tmpfs, bind, loop, nfs
// and encrypted volumes served over Docker's volume plugin protocol.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/nfs"
	"github.com/holdfast/holdfast/internal/metrics"
	"github.com/holdfast/holdfast/internal/usage"
	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type config struct {
	socket, socketGroup, root, mountRoot string
	scope, logLevel, logFormat           string
	tmpfsSize, keyDir, bindPaths         string
	metricsAddr                          string
	nfsTimeout                           time.Duration
	showVersion                          bool
}

func main() {
	if len(os.Args) > 1 {
		if _, ok := commands[os.Args[1]]; ok {
			os.Exit(runCommand(os.Args[1], os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
		}
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "holdfast:", err)
		os.Exit(2)
	}
	if cfg.showVersion {
		fmt.Println("holdfast", version)
		return
	}
	if err := run(cfg); err != nil {
		logrus.WithError(err).Error("holdfast stopped")
		os.Exit(1)
	}
}

// parseFlags reads the flags, each also settable by HOLDFAST_<FLAG> (dashes
// as underscores); the command line wins over the environment.
func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("holdfast", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: holdfast [flags]\n       holdfast COMMAND [flags] [args]\n\nholdfast is a Docker volume plugin. Every flag can also be set with the\nenvironment variable HOLDFAST_<FLAG> (upper case, - as _), e.g. HOLDFAST_ROOT.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "\nCommands (root only; each talks to the running holdfast over --socket):\n")
		for _, n := range strings.Split(commandNames(), ", ") {
			fmt.Fprintf(fs.Output(), "  %-40s %s\n", commands[n].usage, commands[n].about)
		}
		fmt.Fprintf(fs.Output(), "\n%s\n", managedSocketHelp)
	}
	fs.StringVar(&c.socket, "socket", defaultSocket, "Unix `path` of the plugin socket; dockerd finds the plugin by its file name")
	fs.StringVar(&c.socketGroup, "socket-group", "root", "`group` (name or id) that owns the socket besides root")
	fs.StringVar(&c.root, "root", "/var/lib/holdfast", "`directory` for the state database and volume data")
	fs.StringVar(&c.mountRoot, "mount-root", "", "`directory` where volumes are mounted for Docker (default <root>/mounts); apart from --root and --key-dir otherwise")
	fs.StringVar(&c.scope, "scope", "local", "volume scope answered to Docker: local or global (global: every node sees the same volumes, e.g. NFS)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&c.tmpfsSize, "tmpfs-size", "64m", "default `size` of tmpfs volumes, in Docker's size syntax (512k, 100m, 1g)")
	fs.StringVar(&c.bindPaths, "bind-paths", "/", "comma-separated host `directories` below which bind volumes (type=none o=bind device=PATH) may be; empty: no bind volumes (the managed plugin, which sees no host paths)")
	fs.StringVar(&c.keyDir, "key-dir", "/etc/holdfast/keys", "`directory` of crypt volume keys (0700); never inside --root or --mount-root, so a copy of the data carries no keys")
	fs.DurationVar(&c.nfsTimeout, "nfs-timeout", nfs.DefaultTimeout, "`duration` bounding each NFS mount and unmount (name lookup and every version tried), 1s to 100s: inside dockerd's 2-minute limit")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "`host:port` serving Prometheus metrics at GET /metrics, e.g. 127.0.0.1:9273; empty: no metrics")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unknown command %q: the commands are %s (holdfast COMMAND --help); with no command holdfast serves", fs.Arg(0), commandNames())
	}
	if err := applyEnv(fs); err != nil {
		return nil, err
	}
	return c, c.validate()
}

// applyEnv sets each flag not given on the command line from its
// HOLDFAST_ variable.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		val, ok := os.LookupEnv(env)
		if !ok || given[f.Name] || err != nil {
			return
		}
		if serr := fs.Set(f.Name, val); serr != nil {
			err = fmt.Errorf("%s=%q: %w", env, val, serr)
		}
	})
	return err
}

// envName is the environment variable that sets flag.
func envName(flag string) string {
	return "HOLDFAST_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagName names a flag and its variable in errors.
func flagName(flag string) string { return "--" + flag + " (" + envName(flag) + ")" }

func (c *config) validate() error {
	if c.mountRoot == "" {
		c.mountRoot = filepath.Join(c.root, "mounts")
	}
	if c.scope != "local" && c.scope != "global" {
		return fmt.Errorf("%s %q: want local or global", flagName("scope"), c.scope)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return fmt.Errorf("%s %q: want text or json", flagName("log-format"), c.logFormat)
	}
	if _, err := logrus.ParseLevel(c.logLevel); err != nil {
		return fmt.Errorf("%s %q: want debug, info, warn or error", flagName("log-level"), c.logLevel)
	}
	if n, err := units.RAMInBytes(c.tmpfsSize); err != nil || n <= 0 {
		return fmt.Errorf("%s %q: want a size greater than zero such as 64m", flagName("tmpfs-size"), c.tmpfsSize)
	}
	for flag, dir := range map[string]string{"root": c.root, "mount-root": c.mountRoot, "socket": c.socket, "key-dir": c.keyDir} {
		if !filepath.IsAbs(dir) {
			return fmt.Errorf("%s %q: want an absolute path", flagName(flag), dir)
		}
	}
	if c.nfsTimeout < time.Second || c.nfsTimeout > 100*time.Second {
		return fmt.Errorf("%s %v: want 1s to 100s", flagName("nfs-timeout"), c.nfsTimeout)
	}
	if err := checkMetricsAddr(c.metricsAddr); err != nil {
		return fmt.Errorf("%s %q: %w", flagName("metrics-addr"), c.metricsAddr, err)
	}
	return c.checkPaths()
}

// checkMetricsAddr accepts "" (no metrics) or host:port with a port from 1
// to 65535; the host may be empty (every interface), an IP address or a
// name.
func checkMetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port such as 127.0.0.1:9273 or [::1]:9273 (%v)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want a port from 1 to 65535 after the colon, e.g. 127.0.0.1:9273")
	}
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("want a host name or IP address before the colon, e.g. 127.0.0.1:9273")
	}
	return nil
}

// listenMetrics opens the metrics listener, or returns nil when off. A
// port in use fails the start, naming the flag.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w; give another address, or stop what listens there", flagName("metrics-addr"), addr, err)
	}
	return l, nil
}

// checkPaths refuses --root, --mount-root and --key-dir that overlap: a
// copy of --root must carry no keys and no mounted volume, a mount must
// never land on holdfast's own files, and keys must stay apart from the
// data they unlock. The one overlap allowed is the default --mount-root,
// <root>/mounts, which holdfast keeps for its mountpoints. Paths are
// compared by components after resolving symlinks (see resolvePath), so no
// spelling (a symlink, "..", a trailing slash) slips through.
func (c *config) checkPaths() error {
	root, mountRoot, keyDir := resolvePath(c.root), resolvePath(c.mountRoot), resolvePath(c.keyDir)
	show := func(flag, given, resolved string) string {
		s := fmt.Sprintf("%s %q", flagName(flag), given)
		if filepath.Clean(given) != resolved {
			s += fmt.Sprintf(" (%s through symlinks)", resolved)
		}
		return s
	}
	r := show("root", c.root, root)
	m := show("mount-root", c.mountRoot, mountRoot)
	k := show("key-dir", c.keyDir, keyDir)
	switch {
	case mountRoot == root:
		return fmt.Errorf("%s is the same directory as %s: volumes would be mounted over holdfast's own state; leave --mount-root unset (<root>/mounts) or give a directory outside --root", m, r)
	case within(mountRoot, root) && mountRoot != filepath.Join(root, "mounts"):
		return fmt.Errorf("%s is inside %s, where holdfast keeps its state and volume data; leave --mount-root unset (<root>/mounts) or give a directory outside --root", m, r)
	case within(root, mountRoot):
		return fmt.Errorf("%s is inside %s: volumes would be mounted over holdfast's state; give --root and --mount-root directories apart from each other", r, m)
	case keyDir == root || within(keyDir, root):
		return fmt.Errorf("%s is inside %s: keep keys apart from the data they unlock, so a copy of the data carries no keys; give a --key-dir outside --root, e.g. /etc/holdfast/keys", k, r)
	case within(root, keyDir):
		return fmt.Errorf("%s is inside %s: keep keys apart from the data they unlock, so a copy of the data carries no keys; give --root and --key-dir directories apart from each other", r, k)
	case keyDir == mountRoot || within(keyDir, mountRoot):
		return fmt.Errorf("%s is inside %s: volumes are mounted there, so keys would sit among the data they unlock; give a --key-dir outside --mount-root, e.g. /etc/holdfast/keys", k, m)
	case within(mountRoot, keyDir):
		return fmt.Errorf("%s is inside %s: a copy of the keys would carry every mounted volume; give --mount-root and --key-dir directories apart from each other", m, k)
	}
	return nil
}

// within reports whether path is strictly inside dir, comparing whole path
// components: /ab is not inside /a, /a/..b is. Both must be clean and
// absolute.
func within(path, dir string) bool {
	if path == dir {
		return false
	}
	if dir == "/" {
		return true
	}
	return strings.HasPrefix(path, dir+"/")
}

// resolvePath returns the clean absolute path p names once symlinks are
// followed. The directories may not exist yet (holdfast makes them), so the
// longest prefix that exists is resolved and the rest appended as written;
// a dangling symlink is followed to its target, where the directory would
// be.
func resolvePath(p string) string { return resolveFrom(p, 0) }

func resolveFrom(p string, hops int) string {
	p = filepath.Clean(p)
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if target, err := os.Readlink(dir); err == nil && hops < 255 {
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(dir), target)
			}
			return resolveFrom(filepath.Join(target, rest), hops+1)
		}
		if dir == "/" {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// bindPaths splits --bind-paths into cleaned directories.
func bindPaths(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, resolvePath(filepath.Clean(p)))
		}
	}
	return out
}

func newLogger(c *config) *logrus.Logger {
	log := logrus.New()
	// stdout: dockerd logs a managed plugin's stderr as errors.
	log.SetOutput(os.Stdout)
	level, _ := logrus.ParseLevel(c.logLevel)
	log.SetLevel(level)
	if c.logFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	return log
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", flagName("socket-group"), name, err)
	}
	return strconv.Atoi(g.Gid)
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func run(c *config) error {
	log := newLogger(c)
	gid, err := lookupGroup(c.socketGroup)
	if err != nil {
		return err
	}
	boot, err := bootID()
	if err != nil {
		return err
	}
	if err := crypt.CheckKeyDir(c.keyDir, log); err != nil {
		return err
	}
	ml, err := listenMetrics(c.metricsAddr)
	if err != nil {
		return err
	}
	if ml != nil {
		defer ml.Close()
	}
	walker := usage.New(usage.Config{})
	defer walker.Close()
	snap := &snapshot{}
	m := metrics.New(snap)
	mounter := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root:      c.root,
		MountRoot: c.mountRoot,
		Scope:     c.scope,
		BootID:    boot,
		Mounter:   mounter,
		Log:       log,
		Backends:  backends(c, mounter, walker, m, log),
	})
	if errors.Is(err, driver.ErrLocked) {
		return fmt.Errorf("another holdfast is already running with --root %s: %w", c.root, err)
	}
	if err != nil {
		return err
	}
	defer d.Close()
	snap.set(d)
	l, err := server.Listen(c.socket, gid)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.WithFields(logrus.Fields{"version": version, "socket": c.socket, "root": c.root, "mount-root": c.mountRoot, "scope": c.scope}).Info("holdfast serving")
	if ml != nil {
		go func() {
			if err := m.Serve(ctx, ml); err != nil {
				log.WithError(err).Error("metrics server stopped")
			}
		}()
		log.WithField("address", ml.Addr().String()).Info("serving metrics at /metrics")
	}
	err = server.Serve(ctx, l, server.Instrument(d, log).Record(m).Admin(d))
	log.Info("shutting down; mounted volumes stay mounted")
	return err
}

// snapshot hands the driver's volume snapshot to the metrics, once the
// driver exists (the NFS backends need the metrics first).
type snapshot struct {
	mu sync.Mutex
	d  *driver.Driver
}

func (s *snapshot) set(d *driver.Driver) {
	s.mu.Lock()
	s.d = d
	s.mu.Unlock()
}

// VolumeStats answers the driver's snapshot, empty before it is set.
func (s *snapshot) VolumeStats() []metrics.VolumeStat {
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.VolumeStats()
}
