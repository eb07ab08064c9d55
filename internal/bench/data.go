package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/loopdev"
)

// DataSizes sets the data path workload (B4): fio's measures on a File
// byte file (CryptFile for crypt, whose cipher may run at tens of MiB/s),
// the random ones for Runtime each, on holdfast and on each of its
// baselines in turn, Pairs times, with a sync and a pause of Settle
// between the writes and the reads of each round.
type DataSizes struct {
	File, CryptFile int64
	Runtime, Settle time.Duration
	Pairs           int
}

// target is somewhere to run the workload: a mounted directory.
type target struct {
	name  string
	setup func() (dir string, teardown func() error, err error)
}

// baseline is what a holdfast volume is compared with, and the target
// its ratios must meet.
type baseline struct {
	target
	min float64
	// null says the two sides are the same filesystem: the ratio's
	// interval must contain 1, or the method itself is in doubt.
	null bool
}

// Data measures the data path of tmpfs, local, loop and crypt volumes
// with fio against the same filesystem without holdfast (a raw tmpfs of
// the same size and options, a plain directory beside --root, a plain
// ext4 loop image of the same size), and crypt volumes also
// against the cipher's own bound: a crypt volume of a holdfast whose
// --root is on RAM (B4). Each round runs every side once, holdfast first
// then the baselines, the next round in the reverse order (ABBA), so both
// sides of a pair see the same machine and neither always goes first.
func Data(p *Plugin, sz DataSizes) (rows []Row, err error) {
	size := fmt.Sprint(sz.File + 128<<20)
	ram, stopRAM, err := ramPlugin(p.Bin, filepath.Join(p.Dir, "ram"), sz.File)
	if err != nil {
		return nil, fmt.Errorf("crypt on RAM: %w", err)
	}
	defer func() {
		if serr := stopRAM(); err == nil && serr != nil {
			rows, err = nil, fmt.Errorf("crypt on RAM: %w", serr)
		}
	}()
	warm, err := warmFile(p.Dir, sz.File)
	if err != nil {
		return nil, err
	}
	kinds := []struct {
		kind  string
		file  int64
		hf    target
		bases []baseline
	}{
		{"tmpfs", sz.File, volumeTarget(p, "bench-tmpfs", map[string]string{"type": "tmpfs", "size": size}),
			[]baseline{{target{"raw tmpfs", func() (string, func() error, error) { return rawTmpfs(p.Dir, size) }}, 0.97, false}}},
		{"local", sz.File, volumeTarget(p, "bench-local", nil),
			[]baseline{{target{"plain directory", func() (string, func() error, error) { return plainDir(p.Dir) }}, 0.97, true}}},
		{"loop", sz.File, volumeTarget(p, "bench-loop", map[string]string{"type": "loop", "size": size, "fs": "ext4"}),
			[]baseline{{target{"plain ext4 loop image", func() (string, func() error, error) { return ext4Loop(p.Dir, "loop", size) }}, 0.97, false}}},
		{"crypt", sz.CryptFile, volumeTarget(p, "bench-crypt", map[string]string{"type": "crypt", "size": size}), []baseline{
			{target{"plain ext4 loop image", func() (string, func() error, error) { return ext4Loop(p.Dir, "crypt", size) }}, 0.8, false},
			{renamed(volumeTarget(ram, "bench-crypt-ram", map[string]string{"type": "crypt", "size": size}), "crypt on RAM (cipher bound)"), 0.9, false},
		}},
	}
	for _, k := range kinds {
		ms := fioMeasures(k.file, sz.Runtime)
		sides := append([]target{k.hf}, baseTargets(k.bases)...)
		samples, err := interleave(sides, ms, sz.Pairs, sz.Settle, warm)
		if err != nil {
			return nil, err
		}
		for b, base := range k.bases {
			for m, measure := range ms {
				row := pairedAtLeast(pairedRow("B4", fmt.Sprintf("%s vs %s: %s", k.kind, base.name, measure.name),
					samples[0][m], samples[b+1][m], measure.unit), base.min)
				rows = append(rows, row)
				if w, bad := checkNull(row); base.null && bad {
					rows = append(rows, w)
				}
			}
		}
	}
	return rows, nil
}

func renamed(t target, name string) target {
	t.name = name
	return t
}

func baseTargets(bs []baseline) []target {
	ts := make([]target, len(bs))
	for i, b := range bs {
		ts[i] = b.target
	}
	return ts
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// interleave runs the measures on every side, pairs rounds, and returns
// samples[side][measure][round]. A round mounts every side, then runs
// each measure on all of them back to back, in an order that reverses
// from one measure to the next and from one round to the next (ABBA):
// the two runs of a pair are seconds apart, so a change in the machine's
// load between them is as small as it can be, and neither side always
// goes first. The measures run in their order on one file per side
// (written, rewritten, read twice), removed at the end of the round;
// before a settle measure the round settles its reads (settleReads) on
// the file in warm.
func interleave(sides []target, ms []fioMeasure, pairs int, settle time.Duration, warm string) ([][][]float64, error) {
	if err := checkPairs(pairs); err != nil {
		return nil, err
	}
	samples := make([][][]float64, len(sides))
	for i := range samples {
		samples[i] = make([][]float64, len(ms))
	}
	for round := range pairs {
		dirs := make([]string, len(sides))
		var teardowns []func() error
		down := func() error {
			var errs []error
			for _, t := range slices.Backward(teardowns) {
				errs = append(errs, t())
			}
			return errors.Join(errs...)
		}
		for i, s := range sides {
			dir, teardown, err := s.setup()
			if err != nil {
				return nil, errors.Join(fmt.Errorf("%s: %w", s.name, err), down())
			}
			dirs[i] = dir
			teardowns = append(teardowns, teardown)
		}
		for m, measure := range ms {
			if measure.settle {
				if err := settleReads(warm, measure, settle); err != nil {
					return nil, errors.Join(err, down())
				}
			}
			for n := range sides {
				i := n
				if (round+m)%2 == 1 {
					i = len(sides) - 1 - n
				}
				f, err := fioOnce(dirs[i], measure)
				if err != nil {
					return nil, errors.Join(fmt.Errorf("%s: %w", sides[i].name, err), down())
				}
				samples[i][m] = append(samples[i][m], f)
			}
		}
		var errs []error
		for _, d := range dirs {
			errs = append(errs, os.Remove(filepath.Join(d, fioFile)))
		}
		if err := errors.Join(append(errs, down())...); err != nil {
			return nil, err
		}
	}
	return samples, nil
}

// warmFile writes, once, the file settleReads reads: size bytes in a
// directory of dir, on the disk measured.
func warmFile(dir string, size int64) (string, error) {
	warm := filepath.Join(dir, "warm")
	if err := os.MkdirAll(warm, 0o700); err != nil {
		return "", fmt.Errorf("warm-up file: %w", err)
	}
	write := fioMeasures(size, 0)[0]
	if _, err := fio(filepath.Join(warm, fioFile), "warm-up file", write.args); err != nil {
		return "", fmt.Errorf("warm-up file: %w", err)
	}
	return warm, nil
}

// settleReads comes between a round's writes and its reads: it syncs,
// waits settle, then runs measure once on the file in warm and drops the
// figure. On the virtual disk of the machine holdfast is developed on, the
// first read of a round ran at a fraction of the second's speed whichever
// side it was (about 450 MiB/s against 2 GiB/s, in 4 of 6 rounds), even
// two seconds after the writes; the warm-up read takes that place, so
// neither side does.
func settleReads(warm string, measure fioMeasure, settle time.Duration) error {
	unix.Sync()
	time.Sleep(settle)
	if _, err := fioOnce(warm, measure); err != nil {
		return fmt.Errorf("warm-up read: %w", err)
	}
	return nil
}

// ramPlugin starts a second holdfast whose --root is a tmpfs big enough
// for a crypt volume of size bytes and more: its crypt volumes have no
// disk below them, so they run as fast as the kernel's cipher allows.
func ramPlugin(bin, dir string, size int64) (*Plugin, func() error, error) {
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, nil, err
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, fmt.Sprintf("size=%d", size+512<<20)); err != nil {
		return nil, nil, fmt.Errorf("mount tmpfs: %w", err)
	}
	p, err := StartPlugin(bin, dir, "")
	if err != nil {
		unix.Unmount(root, unix.MNT_DETACH)
		return nil, nil, err
	}
	return p, func() error {
		err := removeVolumes(p)
		if serr := p.Stop(); err == nil {
			err = serr
		}
		if uerr := unix.Unmount(root, 0); err == nil {
			err = uerr
		}
		return err
	}, nil
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

// rawTmpfs mounts a tmpfs of the given size under dir, with a tmpfs
// volume's options (nodev, nosuid, mode 1777).
func rawTmpfs(dir, size string) (string, func() error, error) {
	mnt := filepath.Join(dir, "raw-tmpfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", nil, err
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, "mode=1777,size="+size); err != nil {
		return "", nil, fmt.Errorf("mount tmpfs: %w", err)
	}
	return mnt, func() error { return unix.Unmount(mnt, 0) }, nil
}

// plainDir is a directory on the filesystem holding --root.
func plainDir(dir string) (string, func() error, error) {
	d := filepath.Join(dir, "plain")
	return d, func() error { return nil }, os.MkdirAll(d, 0o755)
}

// ext4Loop makes (once) an ext4 filesystem in an image file named for
// kind next to --root and mounts it through a loop device, as holdfast
// makes and mounts its loop and crypt volumes (internal/loopdev: the same
// allocation, mkfs options and loop flags) but without holdfast and
// without encryption.
func ext4Loop(dir, kind, size string) (string, func() error, error) {
	img, mnt := filepath.Join(dir, "plain-"+kind+".img"), filepath.Join(dir, "plain-"+kind)
	if _, err := os.Stat(img); os.IsNotExist(err) {
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("image size %q: %w", size, err)
		}
		if err := loopdev.AllocateImage(img, n); err != nil {
			return "", nil, err
		}
		if err := loopdev.Mkfs(context.Background(), img, loopdev.FSExt4); err != nil {
			return "", nil, err
		}
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", nil, err
	}
	dev, err := loopdev.Attach(img)
	if err != nil {
		return "", nil, err
	}
	defer dev.Close() // autoclear: the loop device goes with the unmount
	if err := unix.Mount(dev.Path, mnt, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return "", nil, fmt.Errorf("mount %s on %s: %w", dev.Path, mnt, err)
	}
	return mnt, func() error { return unix.Unmount(mnt, 0) }, nil
}
