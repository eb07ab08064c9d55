package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdfastBin is holdfast, built once for these tests.
var holdfastBin string

func TestMain(m *testing.M) {
	if os.Getenv(GuestBenchEnv) == "1" {
		// The guest has no Go toolchain; its benchmark needs no binary.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "holdfast-bench-bin")
	if err != nil {
		panic(err)
	}
	holdfastBin = filepath.Join(dir, "holdfast")
	if out, err := exec.Command("go", "build", "-o", holdfastBin, "../../cmd/holdfast").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the benchmarks mount filesystems and drop the page cache")
	}
}

// quick runs the quick workload and returns its rows by ID.
func quick(t *testing.T, docker string, only ...string) map[string][]Row {
	requireRoot(t)
	c := Quick()
	c.Bin, c.Dir, c.DockerSock, c.Only = holdfastBin, filepath.Join(t.TempDir(), "work"), docker, only
	r := Run(c, func(s string) { t.Log("measuring", s) })
	require.Empty(t, r.Errors)
	assert.NoDirExists(t, c.Dir, "the work directory is removed")
	byID := map[string][]Row{}
	for _, row := range r.Rows {
		assert.Greater(t, row.Value, 0.0, row.Name)
		if row.Base != nil {
			assert.Greater(t, *row.Base, 0.0, row.Name)
		}
		byID[row.ID] = append(byID[row.ID], row)
	}
	return byID
}

// TestQuickSuites runs every suite but B2 on a small workload: the
// benchmarks must keep working, whatever their figures.
func TestQuickSuites(t *testing.T) {
	rows := quick(t, "")
	for id, n := range map[string]int{"B1": 13, "B3": 2, "B4": 20, "B5": 1} {
		assert.Len(t, rows[id], n, id)
	}
	assert.GreaterOrEqual(t, len(rows["C"]), 3)
	assert.Empty(t, rows["B2"])
	for _, row := range rows["B4"] {
		assert.NotNil(t, row.Ratio, row.Name)
		assert.NotNil(t, row.Met, row.Name)
	}
}

// TestQuickDocker runs B2 against a real dockerd. make e2e, which starts
// dockerd, runs it with HOLDFAST_BENCH_DOCKER=1. The pgbench suite is left
// to make bench, which builds its PostgreSQL image (hack/pgimage.sh).
func TestQuickDocker(t *testing.T) {
	if os.Getenv("HOLDFAST_BENCH_DOCKER") == "" {
		t.Skip("needs a running dockerd: make e2e starts one and runs this test with HOLDFAST_BENCH_DOCKER=1")
	}
	rows := quick(t, "/var/run/docker.sock", "ceilings", "control", "docker", "data")
	require.Len(t, rows["B2"], 4)
	for _, row := range rows["B2"] {
		assert.NotNil(t, row.Ratio)
	}
}

func TestReport(t *testing.T) {
	r := &Report{Started: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), Host: "test"}
	r.Add(atMost(compared("B2", "pair", 2.5, 2, "ms"), 1.25, "ratio <= 1.25"),
		atLeast(Row{ID: "B4", Name: "rate", Value: 1500, Unit: "MiB/s", Note: "why"}, 1000, ">= 1000"))
	r.Fail("suite", os.ErrNotExist)
	var out strings.Builder
	require.NoError(t, r.WriteTable(&out))
	assert.Contains(t, out.String(), "B2  pair     2.5 ms      2 ms     1.250  ratio <= 1.25  yes")
	assert.Contains(t, out.String(), "1500 MiB/s")
	assert.Contains(t, out.String(), "B4 rate: why")
	assert.Contains(t, out.String(), "FAILED suite: file does not exist")
	path := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, r.WriteJSON(path))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"ratio": 1.25`)
}

func TestPercentiles(t *testing.T) {
	var d durations
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	assert.Equal(t, time.Duration(50), d.pct(50))
	assert.Equal(t, time.Duration(99), d.pct(99))
	assert.Equal(t, time.Duration(100), d.pct(100))
	assert.Equal(t, time.Duration(1), d.pct(0))
	assert.Equal(t, time.Duration(0), durations{}.pct(50))
}
