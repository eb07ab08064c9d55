package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"
)

// PGSizes sets the database benchmark: pgbench's TPC-B-like transactions
// from Clients connections for Runtime, on a database of scale Scale,
// Pairs rounds.
type PGSizes struct {
	Scale, Clients int
	Runtime        time.Duration
	Pairs          int
}

// pgSide is a PostgreSQL data directory on one kind of volume.
type pgSide struct {
	name string
	dir  string // the volume's mountpoint
}

// PGBench runs PostgreSQL (Debian's binaries, on the host, as the
// postgres user) with its data directory on a holdfast local volume, a
// holdfast crypt volume and a Docker local volume, and compares their
// pgbench TPS, in rounds whose order alternates as B4's do. The server
// runs on the host rather than in a container: a container sees a volume
// through a bind mount of the same mountpoint, so the data path is the
// same, and there is no registry to pull a postgres image from.
func PGBench(p *Plugin, e *Engine, sz PGSizes) (rows []Row, err error) {
	pg, err := findPostgres()
	if err != nil {
		return nil, err
	}
	const dockerVol = "holdfast-bench-pg"
	if err := e.CreateVolume(dockerVol, "local"); err != nil {
		return nil, err
	}
	defer func() {
		if rerr := e.RemoveVolume(dockerVol); err == nil && rerr != nil {
			rows, err = nil, rerr
		}
	}()
	dockerDir, err := e.volumeMountpoint(dockerVol)
	if err != nil {
		return nil, err
	}
	size := fmt.Sprint(int64(sz.Scale)*32<<20 + 1<<30)
	sides := []pgSide{{name: "holdfast local"}, {name: "holdfast crypt"}, {name: "Docker local volume", dir: dockerDir}}
	for i, opts := range []map[string]string{nil, {"type": "crypt", "size": size}} {
		name := fmt.Sprintf("bench-pg-%d", i)
		if err := p.Create(name, opts); err != nil {
			return nil, err
		}
		id := fmt.Sprintf("pgbench-%d", i)
		if sides[i].dir, err = p.Mount(name, id); err != nil {
			return nil, err
		}
		defer p.Unmount(name, id)
	}
	sock, err := os.MkdirTemp("", "holdfast-bench-pg")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sock)
	if err := os.Chown(sock, pg.uid, pg.gid); err != nil {
		return nil, err
	}
	for _, s := range sides {
		if err := pg.init(s.dir, sock, sz.Scale); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	tps := make([][]float64, len(sides))
	for round := range sz.Pairs {
		for n := range sides {
			i := n
			if round%2 == 1 {
				i = len(sides) - 1 - n
			}
			t, err := pg.run(sides[i].dir, sock, sz)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sides[i].name, err)
			}
			tps[i] = append(tps[i], t)
		}
	}
	what := fmt.Sprintf("pgbench TPS (scale %d, %d clients, %s)", sz.Scale, sz.Clients, sz.Runtime)
	local := pairedAtLeast(pairedRow("DB", what+": holdfast local vs Docker local volume", tps[0], tps[2], "TPS"), 0.97)
	rows = append(rows, local)
	if w, bad := checkNull(local); bad {
		rows = append(rows, w)
	}
	return append(rows, pairedAtLeast(pairedRow("DB", what+": holdfast crypt vs Docker local volume", tps[1], tps[2], "TPS"), 0.8)), nil
}

// postgres is Debian's PostgreSQL server binaries and the user they run as.
type postgres struct {
	bin      string
	uid, gid int
}

func findPostgres() (*postgres, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return nil, fmt.Errorf("no PostgreSQL server in /usr/lib/postgresql (make bench installs Debian's postgresql)")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &postgres{bin: filepath.Dir(bins[len(bins)-1]), uid: uid, gid: gid}, nil
}

// cmd runs one of PostgreSQL's programs as the postgres user.
func (pg *postgres) cmd(prog string, args ...string) error {
	c := exec.Command(filepath.Join(pg.bin, prog), args...)
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(pg.uid), Gid: uint32(pg.gid)}}
	c.Dir = "/"
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", prog, err, bytes.TrimSpace(out))
	}
	return nil
}

func (pg *postgres) output(prog string, args ...string) ([]byte, error) {
	c := exec.Command(filepath.Join(pg.bin, prog), args...)
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(pg.uid), Gid: uint32(pg.gid)}}
	c.Dir = "/"
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", prog, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// start starts a server on the data directory under mnt, listening only
// on a socket in sock.
func (pg *postgres) start(mnt, sock string) error {
	data := filepath.Join(mnt, "pgdata")
	return pg.cmd("pg_ctl", "start", "-w", "-D", data, "-l", filepath.Join(mnt, "postgres.log"),
		"-o", fmt.Sprintf("-k %s -c listen_addresses='' -p 5433", sock))
}

func (pg *postgres) stop(mnt string) error {
	return pg.cmd("pg_ctl", "stop", "-w", "-m", "fast", "-D", filepath.Join(mnt, "pgdata"))
}

// init makes the data directory and pgbench's tables (untimed).
func (pg *postgres) init(mnt, sock string, scale int) error {
	data := filepath.Join(mnt, "pgdata")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	for _, d := range []string{mnt} {
		if err := os.Chown(d, pg.uid, pg.gid); err != nil {
			return err
		}
	}
	if err := pg.cmd("initdb", "-A", "trust", "-U", "postgres", "-D", data); err != nil {
		return err
	}
	if err := pg.start(mnt, sock); err != nil {
		return err
	}
	err := pg.cmd("pgbench", "-i", "-q", "-s", fmt.Sprint(scale), "-h", sock, "-p", "5433", "-U", "postgres", "postgres")
	if serr := pg.stop(mnt); err == nil {
		err = serr
	}
	return err
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// run starts the server on a cold page cache, runs pgbench and stops it.
func (pg *postgres) run(mnt, sock string, sz PGSizes) (float64, error) {
	if err := dropCaches(); err != nil {
		return 0, err
	}
	if err := pg.start(mnt, sock); err != nil {
		return 0, err
	}
	out, err := pg.output("pgbench", "-n", "-c", fmt.Sprint(sz.Clients), "-j", fmt.Sprint(min(sz.Clients, 2)),
		"-T", fmt.Sprint(int(sz.Runtime.Seconds())), "-h", sock, "-p", "5433", "-U", "postgres", "postgres")
	if serr := pg.stop(mnt); err == nil {
		err = serr
	}
	if err != nil {
		return 0, err
	}
	return parseTPS(out)
}

func parseTPS(out []byte) (float64, error) {
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no TPS in pgbench's output: %s", bytes.TrimSpace(out))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// volumeMountpoint asks dockerd where a volume is.
func (e *Engine) volumeMountpoint(name string) (string, error) {
	res, err := e.http.Get("http://docker/volumes/" + url.PathEscape(name))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("inspect volume %s: %s: %s", name, res.Status, bytes.TrimSpace(b))
	}
	var v struct{ Mountpoint string }
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	return v.Mountpoint, nil
}
