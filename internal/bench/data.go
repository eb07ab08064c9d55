package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// DataSizes sets the data path workload: Seq bytes written then read in
// 1 MiB blocks, and Rand 4 KiB writes at random offsets of a RandFile-byte
// file, Reps times on each side (CryptReps for crypt), in pairs whose
// order alternates: keep them even.
type DataSizes struct {
	Seq, RandFile int64
	Rand, Reps    int
	// CryptReps is Reps for crypt, whose runs take minutes.
	CryptReps int
}

// target is somewhere to run the workload: a mounted directory.
type target struct {
	name  string
	setup func() (dir string, teardown func() error, err error)
}

// Data measures the data path of tmpfs, local and crypt volumes against
// the same backend without holdfast (B4). The two sides of a pair take
// turns, first one then the other, so both see the same machine.
func Data(p *Plugin, sz DataSizes) ([]Row, error) {
	size := fmt.Sprint(sz.Seq + sz.RandFile + 128<<20)
	pairs := []struct {
		kind     string
		min      float64
		reps     int
		hf, base target
	}{
		{"tmpfs", 0.97, sz.Reps, volumeTarget(p, "bench-tmpfs", map[string]string{"type": "tmpfs", "size": size}),
			target{"raw tmpfs", func() (string, func() error, error) { return rawTmpfs(p.Dir, size) }}},
		{"local", 0.97, sz.Reps, volumeTarget(p, "bench-local", nil),
			target{"plain directory", func() (string, func() error, error) { return plainDir(p.Dir) }}},
		{"crypt", 0.8, sz.CryptReps, volumeTarget(p, "bench-crypt", map[string]string{"type": "crypt", "size": size}),
			target{"plain ext4 loop file", func() (string, func() error, error) { return ext4Loop(p.Dir, size) }}},
	}
	var rows []Row
	for _, pr := range pairs {
		var hf, base samples
		for rep := range pr.reps {
			sides := []*samples{&hf, &base}
			targets := []target{pr.hf, pr.base}
			if rep%2 == 1 {
				sides[0], sides[1], targets[0], targets[1] = sides[1], sides[0], targets[1], targets[0]
			}
			for i, t := range targets {
				if err := runTarget(t, sz, sides[i]); err != nil {
					return nil, fmt.Errorf("%s: %w", t.name, err)
				}
			}
		}
		what := fmt.Sprintf("%s vs %s", pr.kind, pr.base.name)
		target := fmt.Sprintf("ratio >= %.2f", pr.min)
		rows = append(rows,
			atLeast(paired("B4", what+": seq write", hf.write, base.write, "MiB/s"), pr.min, target),
			atLeast(paired("B4", what+": seq read", hf.read, base.read, "MiB/s"), pr.min, target),
			atLeast(paired("B4", what+": 4k random write", hf.rand, base.rand, "IOPS"), pr.min, target))
	}
	return rows, nil
}

// paired builds a row from runs made in pairs: the rates are the medians
// of each side, the ratio the median of the pairs' ratios, so that a disk
// slowing down for a while moves both sides of a pair together.
func paired(id, name string, hf, base []float64, unit string) Row {
	ratios := make([]float64, len(hf))
	for i := range hf {
		ratios[i] = hf[i] / base[i]
	}
	return Row{ID: id, Name: name, Value: median(hf), Base: ptr(median(base)), Ratio: ptr(median(ratios)), Unit: unit}
}

// samples are one side's rates, one per rep.
type samples struct{ write, read, rand []float64 }

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func runTarget(t target, sz DataSizes, into *samples) error {
	dir, teardown, err := t.setup()
	if err != nil {
		return err
	}
	err = workload(dir, sz, into)
	if terr := teardown(); err == nil {
		err = terr
	}
	return err
}

// workload writes, reads (from the device: caches dropped first) and
// randomly rewrites files in dir, then deletes them.
func workload(dir string, sz DataSizes, into *samples) error {
	seq := filepath.Join(dir, "seq")
	w, err := seqWrite(seq, sz.Seq)
	if err != nil {
		return err
	}
	r, err := seqRead(seq)
	if err != nil {
		return err
	}
	rnd, err := randWrite(filepath.Join(dir, "rand"), sz.RandFile, sz.Rand)
	if err != nil {
		return err
	}
	mib := float64(sz.Seq) / (1 << 20)
	into.write = append(into.write, mib/w.Seconds())
	into.read = append(into.read, mib/r.Seconds())
	into.rand = append(into.rand, float64(sz.Rand)/rnd.Seconds())
	return removeAll(seq, filepath.Join(dir, "rand"))
}

func removeAll(files ...string) error {
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	return nil
}

func block() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// seqWrite writes size bytes in 1 MiB blocks and fsyncs. It starts from
// a quiet machine: what earlier runs left dirty written out first.
func seqWrite(path string, size int64) (time.Duration, error) {
	unix.Sync()
	buf := block()
	t := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return time.Since(t), f.Close()
}

// seqRead drops the page cache, then reads path in 1 MiB blocks.
func seqRead(path string) (time.Duration, error) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return 0, fmt.Errorf("drop caches: %w", err)
	}
	buf := make([]byte, 1<<20)
	t := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			return time.Since(t), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// randWrite writes a file of size bytes (untimed), then times ops 4 KiB
// writes at random aligned offsets followed by an fsync.
func randWrite(path string, size int64, ops int) (time.Duration, error) {
	if _, err := seqWrite(path, size); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := block()[:4096]
	t := time.Now()
	for range ops {
		if _, err := f.WriteAt(buf, rand.Int64N(size/4096)*4096); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return time.Since(t), f.Close()
}

// volumeTarget creates a holdfast volume once and mounts it per run.
func volumeTarget(p *Plugin, name string, opts map[string]string) target {
	created := false
	return target{name: "holdfast " + name, setup: func() (string, func() error, error) {
		if !created {
			if err := p.Create(name, opts); err != nil {
				return "", nil, err
			}
			created = true
		}
		id := fmt.Sprintf("%032x", rand.Uint64())
		mp, err := p.Mount(name, id)
		if err != nil {
			return "", nil, err
		}
		return mp, func() error { return p.Unmount(name, id) }, nil
	}}
}

// rawTmpfs mounts a tmpfs of the given size under dir.
func rawTmpfs(dir, size string) (string, func() error, error) {
	mnt := filepath.Join(dir, "raw-tmpfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", nil, err
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, "size="+size); err != nil {
		return "", nil, fmt.Errorf("mount tmpfs: %w", err)
	}
	return mnt, func() error { return unix.Unmount(mnt, 0) }, nil
}

// plainDir is a directory on the filesystem holding --root.
func plainDir(dir string) (string, func() error, error) {
	d := filepath.Join(dir, "plain")
	return d, func() error { return nil }, os.MkdirAll(d, 0o755)
}

// ext4Loop makes (once) an ext4 filesystem in a file allocated next to
// --root and mounts it through a loop device, as a crypt volume is but
// without encryption.
func ext4Loop(dir, size string) (string, func() error, error) {
	img, mnt := filepath.Join(dir, "plain.img"), filepath.Join(dir, "plain-ext4")
	if _, err := os.Stat(img); os.IsNotExist(err) {
		if out, err := exec.Command("fallocate", "-l", size, img).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("fallocate: %w: %s", err, out)
		}
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-E", "nodiscard", img).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("mkfs.ext4: %w: %s", err, out)
		}
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", nil, err
	}
	if out, err := exec.Command("mount", "-o", "loop,nodev,nosuid", img, mnt).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("mount %s: %w: %s", img, err, out)
	}
	return mnt, func() error { return unix.Unmount(mnt, 0) }, nil
}
