package powerloss

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
)

// states checks crash states: the replayed image (advanced entry after
// entry by the Replayer) is copied to a scratch image for each state,
// which is mounted, served by holdfast, unmounted and fsck'd.
type states struct {
	t          *testing.T
	fs         fsInfo
	ops        []op
	markAt     []int // log index of each op's mark
	replayImg  *os.File
	scratch    string
	mnt        string
	mountRoot  string
	cryptOpens int
	// opened remembers, per crypt volume, the bytes of the last state in
	// which it opened with its key and held its files: a state with the
	// same bytes (record, key, backing file) and the same files expected
	// opens the same way, so it is not opened again.
	opened      map[string]cryptState
	cryptReused int
	// loopMounts and loopReused count the same for loop volumes.
	loopMounts, loopReused int
	spent                  map[string]time.Duration
}

// cryptState is what decides whether a crypt volume opens and what it
// holds.
type cryptState struct {
	record, key, backing []byte
	files                map[string]string
}

func (c cryptState) same(o cryptState) bool {
	return bytes.Equal(c.record, o.record) && bytes.Equal(c.key, o.key) && bytes.Equal(c.backing, o.backing) && maps.Equal(c.files, o.files)
}

func newStates(t *testing.T, fs fsInfo, work string, ops []op, marks map[string]int) *states {
	s := &states{t: t, fs: fs, ops: ops, scratch: filepath.Join(work, "scratch.img"),
		mnt: filepath.Join(work, "replay"), mountRoot: filepath.Join(work, "replay-mounts"), spent: map[string]time.Duration{}, opened: map[string]cryptState{}}
	for _, o := range ops {
		s.markAt = append(s.markAt, marks[o.mark])
	}
	replay := filepath.Join(work, "replay.img")
	require.NoError(t, copySparse(replay, filepath.Join(work, "base.img")))
	f, err := os.OpenFile(replay, os.O_RDWR, 0)
	require.NoError(t, err)
	s.replayImg = f
	require.NoError(t, os.Mkdir(s.mnt, 0o700))
	return s
}

func (s *states) close() { s.replayImg.Close() }

// acked returns how many requests were acknowledged before log entry p.
func (s *states) acked(p int) int {
	n := 0
	for n < len(s.markAt) && s.markAt[n] < p {
		n++
	}
	return n
}

func (s *states) lastAcked(p int) string {
	if n := s.acked(p); n > 0 {
		o := s.ops[n-1]
		return fmt.Sprintf("request %d (%s %s)", n-1, o.kind, o.vol)
	}
	return "no request"
}

func (s *states) inFlight(p int) string {
	if n := s.acked(p); n < len(s.ops) {
		o := s.ops[n]
		return fmt.Sprintf("request %d (%s %s)", n, o.kind, o.vol)
	}
	return "no request"
}

func (s *states) timed(what string, f func() error) error {
	t0 := time.Now()
	err := f()
	s.spent[what] += time.Since(t0)
	return err
}

// cost says where the time of the checks went.
func (s *states) cost() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.spent)) {
		parts = append(parts, fmt.Sprintf("%s %v", k, s.spent[k].Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ") + fmt.Sprintf("; %d crypt opens, %d crypt states the same as one opened before; %d loop mounts, %d loop states the same as one mounted before", s.cryptOpens, s.cryptReused, s.loopMounts, s.loopReused)
}

// expected is what the acknowledged requests promise about one volume.
type expected struct {
	opts  map[string]string
	files map[string]string // container files written and fsynced
	// maybe: the request in flight creates or removes it, so either
	// outcome is right.
	maybe bool
	sure  bool // it must exist
}

// model returns, for every volume named so far, what must be true after a
// cut at log entry p.
func (s *states) model(p int) map[string]*expected {
	n := s.acked(p)
	m := map[string]*expected{}
	for _, o := range s.ops[:n] {
		switch o.kind {
		case opCreate:
			m[o.vol] = &expected{opts: o.opts, files: map[string]string{}, sure: true}
		case opRemove:
			m[o.vol] = &expected{}
		case opWrite:
			m[o.vol].files[o.file] = o.data
		}
	}
	if n < len(s.ops) {
		switch o := s.ops[n]; o.kind {
		case opCreate:
			m[o.vol] = &expected{opts: o.opts, files: map[string]string{}, maybe: true}
		case opRemove:
			m[o.vol].maybe = true
		}
	}
	return m
}

// check builds the crash state at log entry p and holds it to the model.
func (s *states) check(p int) error {
	if err := s.timed("copy", func() error { return copySparse(s.scratch, s.replayImg.Name()) }); err != nil {
		return err
	}
	dev, err := attachLoop(s.scratch)
	if err != nil {
		return err
	}
	defer dev.Close()
	err = s.timed("mount", func() error { return unix.Mount(dev.Path, s.mnt, s.fs.name, 0, "") })
	if err != nil {
		return fmt.Errorf("mount the replayed %s (the filesystem did not survive the cut): %w", s.fs.name, err)
	}
	err = s.serve(p)
	if uerr := unix.Unmount(s.mnt, 0); uerr != nil && err == nil {
		err = fmt.Errorf("unmount the replayed filesystem: %w (still mounted: %v)", uerr, mountsUnder(s.mountRoot))
	}
	if err != nil {
		return err
	}
	return s.timed("fsck", func() error {
		return run(s.fs.fsck[0], append(s.fs.fsck[1:], dev.Path)...)
	})
}

// serve starts holdfast on the mounted crash state and checks it.
func (s *states) serve(p int) error {
	pt := pathsAt(s.mnt, s.mountRoot)
	var d *driver.Driver
	err := s.timed("start", func() (err error) {
		d, err = newDriver(pt, fmt.Sprintf("replay-%d", p))
		if err == nil {
			d.WaitDeleted()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("holdfast does not start on the crash state: %w", err)
	}
	defer d.Close()
	err = s.timed("check", func() error { return s.checkState(d, pt, s.model(p)) })
	if err != nil {
		return err
	}
	if left := mountsUnder(s.mountRoot); len(left) > 0 {
		return fmt.Errorf("mounts left after the checks: %v", left)
	}
	return nil
}

func (s *states) checkState(d *driver.Driver, pt paths, model map[string]*expected) error {
	list, err := d.List()
	if err != nil {
		return fmt.Errorf("List: %w", err)
	}
	listed := map[string]bool{}
	for _, v := range list.Volumes {
		listed[v.Name] = true
		if model[v.Name] == nil || (!model[v.Name].sure && !model[v.Name].maybe) {
			return fmt.Errorf("volume %s is listed, but no acknowledged or pending request created it (or its removal was acknowledged)", v.Name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(model)) {
		e := model[name]
		switch {
		case listed[name]:
			if err := s.checkVolume(d, pt, name, e); err != nil {
				return fmt.Errorf("volume %s: %w", name, err)
			}
		case e.sure && !e.maybe:
			return fmt.Errorf("volume %s was created (acknowledged) but is gone", name)
		default:
			if err := checkGone(pt, name); err != nil {
				return err
			}
		}
	}
	return checkNothingElse(pt, listed)
}

// checkVolume checks a listed volume: its record's options, no lease after
// the reboot, its storage, and the container files, read through a Mount.
func (s *states) checkVolume(d *driver.Driver, pt paths, name string, e *expected) error {
	g, err := d.Get(&volume.GetRequest{Name: name})
	if err != nil {
		return fmt.Errorf("Get: %w", err)
	}
	if g.Volume.Status["leases"] != 0 || g.Volume.Status["mounted"] != false {
		return fmt.Errorf("after the reboot it holds leases or is believed mounted: %v", g.Volume.Status)
	}
	dir := filepath.Join(pt.root, "volumes", name)
	b, err := os.ReadFile(filepath.Join(dir, ".holdfast-volume"))
	if err != nil {
		return fmt.Errorf("its record file: %w", err)
	}
	var rec struct{ Volume driver.Volume }
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Errorf("its record file is corrupt: %w", err)
	}
	for k, want := range e.opts {
		if got := rec.Volume.Options[k]; k != "type" && got != want && !(k == "size" && got != "") && !(k == "mode" && strings.TrimLeft(got, "0") == strings.TrimLeft(want, "0")) {
			return fmt.Errorf("option %s=%q, created with %q", k, got, want)
		}
	}
	if rec.Volume.Type != e.opts["type"] {
		return fmt.Errorf("type %q, created as %q", rec.Volume.Type, e.opts["type"])
	}
	switch e.opts["type"] {
	case "local":
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, "data"), &st); err != nil {
			return fmt.Errorf("its data directory: %w", err)
		}
		if uid := e.opts["uid"]; uid != "" && fmt.Sprint(st.Uid) != uid {
			return fmt.Errorf("data directory owned by %d, created with uid=%s", st.Uid, uid)
		}
	case "crypt":
		fi, err := os.Stat(filepath.Join(dir, "backing.img"))
		if err != nil {
			return fmt.Errorf("its backing file: %w", err)
		}
		if fi.Size() != 32<<20 {
			return fmt.Errorf("backing file of %d bytes, created with size=32m", fi.Size())
		}
		cs, err := readCryptState(dir, filepath.Join(pt.keyDir, name+".key"), b, e.files)
		if err != nil {
			return err
		}
		if prev, ok := s.opened[name]; ok && prev.same(cs) {
			s.cryptReused++
			return nil
		}
		if err := s.checkFiles(d, name, e.files); err != nil {
			return err
		}
		s.cryptOpens++
		s.opened[name] = cs
		return nil
	case "loop":
		fi, err := os.Stat(filepath.Join(dir, "backing.img"))
		if err != nil {
			return fmt.Errorf("its backing file: %w", err)
		}
		if fi.Size() != 16<<20 {
			return fmt.Errorf("backing file of %d bytes, created with size=16m", fi.Size())
		}
		if s.loopState(name, dir, b, e.files) {
			return nil
		}
	case "tmpfs":
		return nil // nothing of it survives a reboot but its record
	}
	return s.checkFiles(d, name, e.files)
}

// loopState tells whether a loop volume's record, image and expected
// files are byte for byte those of a state it was mounted and read in
// before (then mounting it again shows nothing new), and remembers them.
func (s *states) loopState(name, dir string, record []byte, files map[string]string) bool {
	backing, err := os.ReadFile(filepath.Join(dir, "backing.img"))
	if err != nil {
		return false
	}
	cs := cryptState{record: record, backing: backing, files: maps.Clone(files)}
	if prev, ok := s.opened[name]; ok && prev.same(cs) {
		s.loopReused++
		return true
	}
	s.opened[name] = cs
	s.loopMounts++
	return false
}

// readCryptState reads what decides how a crypt volume opens.
func readCryptState(dir, keyFile string, record []byte, files map[string]string) (cryptState, error) {
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return cryptState{}, fmt.Errorf("its key: %w", err)
	}
	backing, err := os.ReadFile(filepath.Join(dir, "backing.img"))
	if err != nil {
		return cryptState{}, fmt.Errorf("its backing file: %w", err)
	}
	return cryptState{record: record, key: key, backing: backing, files: maps.Clone(files)}, nil
}

// checkFiles mounts the volume as a container would and reads back every
// file written and fsynced before the cut.
func (s *states) checkFiles(d *driver.Driver, name string, files map[string]string) error {
	m, err := d.Mount(&volume.MountRequest{Name: name, ID: "check"})
	if err != nil {
		return fmt.Errorf("Mount (a crypt volume must open with its key): %w", err)
	}
	for f, want := range files {
		got, err := os.ReadFile(filepath.Join(m.Mountpoint, f))
		if err == nil && !bytes.Equal(got, []byte(want)) {
			err = fmt.Errorf("holds %q, %q was written and fsynced", got, want)
		}
		if err != nil {
			d.Unmount(&volume.UnmountRequest{Name: name, ID: "check"})
			return fmt.Errorf("container file %s: %w", f, err)
		}
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: "check"}); err != nil {
		return fmt.Errorf("Unmount: %w", err)
	}
	return nil
}

// checkGone checks nothing is left of a volume that is not listed.
func checkGone(pt paths, name string) error {
	for _, p := range []string{filepath.Join(pt.root, "volumes", name), filepath.Join(pt.keyDir, name+".key")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("volume %s is not listed, but %s is still there (err %v)", name, p, err)
		}
	}
	return nil
}

// checkNothingElse checks that --root and --key-dir hold nothing but the
// listed volumes once holdfast has started and cleaned up.
func checkNothingElse(pt paths, listed map[string]bool) error {
	want := map[string]map[string]bool{
		pt.root:                           {"holdfast.db": true, "volumes": true, "trash": true},
		filepath.Join(pt.root, "volumes"): listed,
		filepath.Join(pt.root, "trash"):   {},
		pt.keyDir:                         {},
	}
	for n := range listed {
		want[pt.keyDir][n+".key"] = true
	}
	for dir, ok := range want {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) && dir == pt.keyDir {
			continue // made at the first crypt Create
		}
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !ok[e.Name()] {
				return fmt.Errorf("%s is left in %s, and holdfast neither explains nor cleans it", e.Name(), dir)
			}
		}
	}
	return nil
}
