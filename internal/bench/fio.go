package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// A fio measure: one fio run on one file, with the page cache dropped
// before it so that no run reads what an earlier one left in memory.
type fioMeasure struct {
	name, unit string
	args       []string
	// rate picks the figure from fio's job: MiB/s or IOPS.
	rate func(fioJob) float64
	// settle says the measure is the first read after the writes: each
	// round settles before it (settleReads).
	settle bool
}

// fioJob is the part of a job in fio's JSON output (--output-format=json)
// the benchmarks read.
type fioJob struct {
	Name  string `json:"jobname"`
	Error int    `json:"error"`
	Read  fioIO  `json:"read"`
	Write fioIO  `json:"write"`
}

type fioIO struct {
	BwBytes float64 `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
	IOBytes int64   `json:"io_bytes"`
}

type fioOutput struct {
	Version string   `json:"fio version"`
	Jobs    []fioJob `json:"jobs"`
}

// fioMeasures are B4's four measures on one file of size bytes: written
// in 1 MiB blocks with an fsync at the end (fio counts it in the time),
// rewritten at random 4 KiB offsets with an fsync after every write, then,
// after the pause of a settle measure, read in 1 MiB blocks and at random
// 4 KiB offsets; the random ones for runtime each. The writes come first
// so that one settling (settleReads) comes between every write and every
// read.
func fioMeasures(size int64, runtime time.Duration) []fioMeasure {
	common := []string{"--ioengine=psync", fmt.Sprintf("--size=%d", size)}
	timed := []string{"--time_based", fmt.Sprintf("--runtime=%dms", runtime.Milliseconds())}
	mibs := func(io func(fioJob) fioIO) func(fioJob) float64 {
		return func(j fioJob) float64 { return io(j).BwBytes / (1 << 20) }
	}
	iops := func(io func(fioJob) fioIO) func(fioJob) float64 {
		return func(j fioJob) float64 { return io(j).IOPS }
	}
	rd := func(j fioJob) fioIO { return j.Read }
	wr := func(j fioJob) fioIO { return j.Write }
	return []fioMeasure{
		{"seq write 1M, end fsync", "MiB/s", append([]string{"--rw=write", "--bs=1M", "--end_fsync=1"}, common...), mibs(wr), false},
		{"4k random write, fsync each", "IOPS", append(append([]string{"--rw=randwrite", "--bs=4k", "--fsync=1"}, common...), timed...), iops(wr), false},
		{"seq read 1M", "MiB/s", append([]string{"--rw=read", "--bs=1M"}, common...), mibs(rd), true},
		{"4k random read", "IOPS", append(append([]string{"--rw=randread", "--bs=4k"}, common...), timed...), iops(rd), false},
	}
}

// fioFile is the file the measures run on, in the directory measured.
const fioFile = "fio.data"

// fioOnce drops the page cache and runs one measure on dir's fio file.
func fioOnce(dir string, m fioMeasure) (float64, error) {
	if err := dropCaches(); err != nil {
		return 0, err
	}
	j, err := fio(filepath.Join(dir, fioFile), m.name, m.args)
	if err != nil {
		return 0, err
	}
	f := m.rate(j)
	if f <= 0 {
		return 0, fmt.Errorf("fio %s on %s: no rate in its output", m.name, dir)
	}
	return f, nil
}

// fioCPU is the CPU fio is pinned to (taskset): the last one, so that a
// run is not moved between cores halfway and every run sees the same
// core's caches.
func fioCPU() string { return fmt.Sprint(runtime.NumCPU() - 1) }

// fio runs one job on file and parses its JSON output.
func fio(file, name string, args []string) (fioJob, error) {
	cmd := exec.Command("taskset", append([]string{"-c", fioCPU(), "fio", "--name=" + name, "--filename=" + file, "--output-format=json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fioJob{}, fmt.Errorf("fio %s on %s: %w: %s", name, file, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return parseFio(stdout.Bytes())
}

// parseFio reads fio's JSON output of one job. fio may print notes before
// the JSON document; they are skipped.
func parseFio(b []byte) (fioJob, error) {
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	var o fioOutput
	if err := json.Unmarshal(b, &o); err != nil {
		return fioJob{}, fmt.Errorf("fio's JSON output: %w", err)
	}
	if len(o.Jobs) != 1 {
		return fioJob{}, fmt.Errorf("fio's JSON output has %d jobs, want 1", len(o.Jobs))
	}
	if j := o.Jobs[0]; j.Error != 0 {
		return fioJob{}, fmt.Errorf("fio job %s: error %d (%s)", j.Name, j.Error, unix.Errno(j.Error))
	}
	return o.Jobs[0], nil
}

// dropCaches writes out dirty pages, then drops the page cache, dentries
// and inodes.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}
