package bench

import (
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// PGImage is the PostgreSQL image the database benchmark runs: Debian's
// postgresql packages imported as a rootfs by hack/pgimage.sh (there is
// no registry to pull from), with its pgbench-run script.
const PGImage = "holdfast-bench-postgres:latest"

// PGSizes sets the database benchmark: pgbench's TPC-B-like transactions
// from Clients connections for Runtime, on a database of scale Scale,
// Pairs rounds.
type PGSizes struct {
	Scale, Clients int
	Runtime        time.Duration
	Pairs          int
}

// pgSide is one volume a PostgreSQL container keeps its data on.
type pgSide struct {
	name, volume, driver string
	opts                 map[string]string
}

// PGBench runs PostgreSQL in a container through dockerd, the way a user
// runs a database on a volume, with its data directory on a holdfast
// local volume, a holdfast crypt volume (driver names the holdfast
// serving dockerd's legacy plugin socket) and a volume of Docker's own
// local driver, and compares their pgbench TPS. Each round runs every
// side once, the next round in the reverse order (ABBA), with the page
// cache dropped before every run; the server starts and stops in each
// run's container, so every run starts cold.
func PGBench(sock, driver string, sz PGSizes) (rows []Row, err error) {
	if err := checkPairs(sz.Pairs); err != nil {
		return nil, err
	}
	d := &dockerCLI{sock: sock}
	if _, err := d.run("image", "inspect", PGImage); err != nil {
		return nil, fmt.Errorf("no image %s (make bench builds it: hack/pgimage.sh): %w", PGImage, err)
	}
	owner := map[string]string{"uid": "999", "gid": "999", "mode": "0700"}
	crypt := map[string]string{"type": "crypt", "size": fmt.Sprint(int64(sz.Scale)*32<<20 + 512<<20)}
	for k, v := range owner {
		crypt[k] = v
	}
	sides := []pgSide{
		{"holdfast local", "holdfast-bench-pg-local", driver, owner},
		{"holdfast crypt", "holdfast-bench-pg-crypt", driver, crypt},
		{"Docker local volume", "holdfast-bench-pg-docker", "local", nil},
	}
	for _, s := range sides {
		args := []string{"volume", "create", "--driver", s.driver}
		for k, v := range s.opts {
			args = append(args, "--opt", k+"="+v)
		}
		if _, err := d.run(append(args, s.volume)...); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		defer func() {
			if _, rerr := d.run("volume", "rm", s.volume); err == nil && rerr != nil {
				rows, err = nil, rerr
			}
		}()
		if _, err := d.postgres(s.volume, "init", fmt.Sprint(sz.Scale)); err != nil {
			return nil, fmt.Errorf("%s: pgbench -i: %w", s.name, err)
		}
	}
	tps := make([][]float64, len(sides))
	for round := range sz.Pairs {
		for n := range sides {
			i := n
			if round%2 == 1 {
				i = len(sides) - 1 - n
			}
			t, err := d.pgbench(sides[i].volume, sz)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sides[i].name, err)
			}
			tps[i] = append(tps[i], t)
		}
	}
	what := fmt.Sprintf("pgbench TPS in a container (scale %d, %d clients, %s)", sz.Scale, sz.Clients, sz.Runtime)
	// A local volume and a Docker local volume are directories on the
	// same filesystem (here): a check on the method, as B4's local rows.
	local := pairedAtLeast(pairedRow("DB", what+": holdfast local vs Docker local volume", tps[0], tps[2], "TPS"), 0.97)
	rows = append(rows, local)
	if w, bad := checkNull(local); bad {
		rows = append(rows, w)
	}
	return append(rows, pairedAtLeast(pairedRow("DB", what+": holdfast crypt vs Docker local volume", tps[1], tps[2], "TPS"), 0.8)), nil
}

// dockerCLI runs the docker command against one engine. The database
// benchmark is timed by pgbench inside the container, so a CLI process
// per run costs nothing it measures.
type dockerCLI struct{ sock string }

func (d *dockerCLI) run(args ...string) ([]byte, error) {
	c := exec.Command("docker", append([]string{"-H", "unix://" + d.sock}, args...)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("docker %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// postgres runs the image's pgbench-run in a container without a network,
// with volume on PostgreSQL's data directory.
func (d *dockerCLI) postgres(volume string, args ...string) ([]byte, error) {
	return d.run(append([]string{"run", "--rm", "--network", "none",
		"--volume", volume + ":/var/lib/postgresql/data", PGImage, "pgbench-run"}, args...)...)
}

// pgbench drops the page cache and runs pgbench once on volume.
func (d *dockerCLI) pgbench(volume string, sz PGSizes) (float64, error) {
	if err := dropCaches(); err != nil {
		return 0, err
	}
	out, err := d.postgres(volume, "run", fmt.Sprint(sz.Clients), fmt.Sprint(min(sz.Clients, 2)), fmt.Sprint(int(sz.Runtime.Seconds())))
	if err != nil {
		return 0, err
	}
	return parseTPS(out)
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func parseTPS(out []byte) (float64, error) {
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no TPS in pgbench's output: %s", bytes.TrimSpace(out))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
