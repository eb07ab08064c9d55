package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Config says what to measure and how much.
type Config struct {
	// Bin is the holdfast binary; Dir the work directory (on the disk to
	// measure; made and removed by Run).
	Bin, Dir string
	// Cycles and Volumes size B1, B3 and B5; Pairs sizes B2.
	Cycles, Volumes, Pairs int
	Data                   DataSizes
	PG                     PGSizes
	// CeilingTime is how long each ceiling is measured.
	CeilingTime time.Duration
	// DockerSock is dockerd's socket; "" skips B2.
	DockerSock string
	// DockerDriver is the legacy plugin name B2 registers
	// (/run/docker/plugins/NAME.sock).
	DockerDriver string
	// DockerLock is the file whose flock every user of the host's dockerd
	// holds while it does (the end-to-end suite takes it too); "" for none.
	DockerLock string
	// Only, when not empty, names the suites to run: ceilings, control,
	// docker, data, pgbench.
	Only []string
}

// Full is make bench's workload, as the issue sets it.
func Full() Config {
	return Config{
		Cycles: 2000, Volumes: 10000, Pairs: 200,
		Data:        DataSizes{File: 128 << 20, CryptFile: 64 << 20, Runtime: time.Second, Settle: 2 * time.Second, Pairs: 12},
		PG:          PGSizes{Scale: 10, Clients: 4, Runtime: 8 * time.Second, Pairs: 12},
		CeilingTime: time.Second,
		DockerSock:  "/var/run/docker.sock", DockerDriver: "holdfast-bench",
		DockerLock: "/tmp/holdfast-e2e.lock",
	}
}

// Quick is a small workload that runs every suite in seconds, for tests.
func Quick() Config {
	return Config{
		Cycles: 20, Volumes: 200, Pairs: 5,
		Data:         DataSizes{File: 8 << 20, CryptFile: 8 << 20, Runtime: 200 * time.Millisecond, Settle: 100 * time.Millisecond, Pairs: 2},
		PG:           PGSizes{Scale: 1, Clients: 2, Runtime: time.Second, Pairs: 2},
		CeilingTime:  50 * time.Millisecond,
		DockerDriver: "holdfast-bench",
	}
}

// Run runs every suite and returns the report. A suite that fails is
// recorded in the report's errors and the others still run.
func Run(c Config, progress func(string)) *Report {
	r := NewReport()
	suites := []struct {
		name string
		run  func(dir string) ([]Row, error)
	}{
		{"ceilings", func(dir string) ([]Row, error) { return Ceilings(c.Bin, dir, c.Data.File, c.CeilingTime) }},
		{"control", func(dir string) ([]Row, error) {
			return withPlugin(c.Bin, dir, "", func(p *Plugin) ([]Row, error) { return Control(p, c.Cycles, c.Volumes) })
		}},
		{"docker", func(dir string) ([]Row, error) { return dockerSuite(c, dir) }},
		{"data", func(dir string) ([]Row, error) {
			return withPlugin(c.Bin, dir, "", func(p *Plugin) ([]Row, error) { return Data(p, c.Data) })
		}},
		{"pgbench", func(dir string) ([]Row, error) {
			return withPlugin(c.Bin, dir, pluginSock(c.DockerDriver), func(*Plugin) ([]Row, error) { return PGBench(c.DockerSock, c.DockerDriver, c.PG) })
		}},
	}
	for i, s := range suites {
		if ((s.name == "docker" || s.name == "pgbench") && c.DockerSock == "") || (len(c.Only) > 0 && !slices.Contains(c.Only, s.name)) {
			continue
		}
		progress(s.name)
		dir := filepath.Join(c.Dir, fmt.Sprint(i))
		unlock := func() {}
		if s.name == "docker" || s.name == "pgbench" {
			var err error
			if unlock, err = lock(c.DockerLock, progress); err != nil {
				r.Fail(s.name, err)
				continue
			}
		}
		rows, err := s.run(dir)
		unlock()
		if cerr := cleanDir(dir); err == nil {
			err = cerr
		}
		if err != nil {
			r.Fail(s.name, err)
		}
		r.Add(rows...)
	}
	os.Remove(c.Dir) // empty unless a suite left something it could not unmount
	return r
}

// lock takes an exclusive flock on path, saying so when it has to wait;
// "" takes none.
func lock(path string, progress func(string)) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dockerd's lock: %w", err)
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		progress("... waiting for " + path + " (another user of dockerd holds it)")
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
	}
	return func() { f.Close() }, nil
}

func dockerSuite(c Config, dir string) ([]Row, error) {
	e := NewEngine(c.DockerSock)
	if err := e.Ping(); err != nil {
		return nil, fmt.Errorf("dockerd does not answer on %s (start it with hack/docker.sh engine): %w", c.DockerSock, err)
	}
	sock := pluginSock(c.DockerDriver)
	floorName := c.DockerDriver + "-floor"
	floor, err := StartFloor(filepath.Join(dir, "floor"), filepath.Join("/run/docker/plugins", floorName+".sock"))
	if err != nil {
		return nil, err
	}
	rows, err := withPlugin(c.Bin, dir, sock, func(*Plugin) ([]Row, error) { return Docker(e, c.DockerDriver, floorName, c.Pairs) })
	if ferr := floor.Stop(); err == nil {
		err = ferr
	}
	return rows, err
}

// pluginSock is where dockerd finds the legacy plugin named driver.
func pluginSock(driver string) string {
	return filepath.Join("/run/docker/plugins", driver+".sock")
}

// withPlugin runs fn against a holdfast started in dir, then removes every
// volume it has and stops it.
func withPlugin(bin, dir, sock string, fn func(*Plugin) ([]Row, error)) ([]Row, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if sock != "" {
		if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
			return nil, err
		}
	}
	p, err := StartPlugin(bin, dir, sock)
	if err != nil {
		return nil, err
	}
	rows, err := fn(p)
	if cerr := removeVolumes(p); err == nil {
		err = cerr
	}
	if serr := p.Stop(); err == nil {
		err = serr
	}
	return rows, err
}

func removeVolumes(p *Plugin) error {
	var res struct{ Volumes []struct{ Name string } }
	if err := p.Client.Call("VolumeDriver.List", struct{}{}, &res); err != nil {
		return err
	}
	var errs []error
	for _, v := range res.Volumes {
		errs = append(errs, p.Remove(v.Name))
	}
	return errors.Join(errs...)
}

// cleanDir removes a suite's work directory, after unmounting anything a
// failed suite left mounted below it, deepest first: never delete through
// a mountpoint.
func cleanDir(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int { return strings.Compare(b.Mountpoint, a.Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, 0); err != nil {
			return fmt.Errorf("unmount %s: %w; %s left in place", m.Mountpoint, err, dir)
		}
	}
	return os.RemoveAll(dir)
}
