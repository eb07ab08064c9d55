package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// PGServerUID is the user PostgreSQL runs as where it runs without a
// container (initdb and the server refuse root): 999, as in the image.
const PGServerUID = 999

// PGDir is a directory a PostgreSQL cluster of the server benchmark lives
// in: Name says what it is on (a holdfast volume, a plain directory ...).
type PGDir struct{ Name, Dir string }

// pgServer is one PostgreSQL server, started from bin on its own data
// directory and socket directory.
type pgServer struct {
	bin, data, sock string
	port            int
}

// PGServers runs PostgreSQL without a container, one server per dir at
// once (bin is its bin directory: postgres, initdb, pg_ctl, pgbench), and
// returns each dir's pgbench TPS: scale sz.Scale, sz.Clients connections
// for sz.Runtime, sz.Pairs runs per dir, the order of the dirs reversing
// from one run to the next (ABBA) with the page cache dropped before
// every run. The servers stay up between runs. The benchmark in the
// guest (LUKS, where dm-crypt runs) uses it; progress is told each run.
func PGServers(bin string, dirs []PGDir, sz PGSizes, progress func(string)) (tps [][]float64, err error) {
	if err := checkPairs(sz.Pairs); err != nil {
		return nil, err
	}
	servers := make([]*pgServer, len(dirs))
	for i, d := range dirs {
		s := &pgServer{bin: bin, data: filepath.Join(d.Dir, "pgdata"), sock: filepath.Join(os.TempDir(), fmt.Sprintf("holdfast-pg-%d", i)), port: 5432 + i}
		if err := s.init(sz.Scale); err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", d.Name, err), stopAll(servers))
		}
		servers[i] = s
		progress(fmt.Sprintf("%s: initialised (scale %d)", d.Name, sz.Scale))
	}
	tps = make([][]float64, len(dirs))
	for round := range sz.Pairs {
		for n := range dirs {
			i := n
			if round%2 == 1 {
				i = len(dirs) - 1 - n
			}
			if err := dropCaches(); err != nil {
				return nil, errors.Join(err, stopAll(servers))
			}
			t, err := servers[i].pgbench(sz)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("%s: %w", dirs[i].Name, err), stopAll(servers))
			}
			tps[i] = append(tps[i], t)
			progress(fmt.Sprintf("run %d, %s: %.1f TPS", round+1, dirs[i].Name, t))
		}
	}
	return tps, stopAll(servers)
}

func stopAll(servers []*pgServer) error {
	var errs []error
	for _, s := range servers {
		if s != nil {
			errs = append(errs, s.stop())
		}
	}
	return errors.Join(errs...)
}

// init makes the cluster, starts its server and fills pgbench's tables.
func (s *pgServer) init(scale int) error {
	for _, d := range []string{filepath.Dir(s.data), s.sock} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, PGServerUID, PGServerUID); err != nil {
			return err
		}
	}
	if _, err := s.run(true, "initdb", "-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8", "-D", s.data); err != nil {
		return err
	}
	if _, err := s.run(true, "pg_ctl", "start", "-w", "-s", "-D", s.data, "-l", filepath.Join(s.sock, "log"),
		"-o", fmt.Sprintf("-c listen_addresses='' -k %s -p %d", s.sock, s.port)); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.sock, "log"))
		return fmt.Errorf("%w; server log: %s", err, bytes.TrimSpace(log))
	}
	_, err := s.run(false, "pgbench", append([]string{"-i", "-q", "-s", strconv.Itoa(scale)}, s.conn()...)...)
	return err
}

func (s *pgServer) conn() []string {
	return []string{"-h", s.sock, "-p", strconv.Itoa(s.port), "-U", "postgres", "postgres"}
}

// pgbench runs pgbench once against the server.
func (s *pgServer) pgbench(sz PGSizes) (float64, error) {
	out, err := s.run(false, "pgbench", append([]string{"-n", "-c", strconv.Itoa(sz.Clients), "-j", strconv.Itoa(min(sz.Clients, 2)),
		"-T", strconv.Itoa(int(sz.Runtime / time.Second))}, s.conn()...)...)
	if err != nil {
		return 0, err
	}
	return parseTPS(out)
}

func (s *pgServer) stop() error {
	if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err != nil {
		return nil // never started
	}
	_, err := s.run(true, "pg_ctl", "stop", "-w", "-s", "-m", "fast", "-D", s.data)
	return err
}

// run runs one of PostgreSQL's programs, as PGServerUID when asUser (the
// server's own tools refuse root), and returns its standard output.
func (s *pgServer) run(asUser bool, prog string, args ...string) ([]byte, error) {
	c := exec.Command(filepath.Join(s.bin, prog), args...)
	c.Env = append(os.Environ(), "TZ=UTC", "PGTZ=UTC", "LC_ALL=C")
	c.Dir = os.TempDir()
	if asUser {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: PGServerUID, Gid: PGServerUID}}
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s%s", prog, args[0], err, bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(out))
	}
	return out, nil
}
