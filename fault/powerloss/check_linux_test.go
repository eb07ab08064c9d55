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
	t         *testing.T
	fs        fsInfo
	ops       []op
	markAt    []int // log index of each op's mark
	replayImg *os.File
	scratch   string
	mnt       string
	mountRoot string
	// opened remembers, per crypt or loop volume, the bytes of the last
	// state in which it mounted (a crypt volume with its key) and held its
	// files: a state with the same bytes (record, key, image) and the same
	// files expected mounts the same way, so it is not mounted again.
	// opens and reused count, per type, the mounts and the states skipped.
	opened        map[string]imageState
	opens, reused map[string]int
	spent         map[string]time.Duration
}

// imageState is what decides whether a crypt or loop volume mounts and
// what it holds.
type imageState struct {
	record, key, backing []byte
	files                map[string]string
}

func (c imageState) same(o imageState) bool {
	return bytes.Equal(c.record, o.record) && bytes.Equal(c.key, o.key) && bytes.Equal(c.backing, o.backing) && maps.Equal(c.files, o.files)
}

func newStates(t *testing.T, fs fsInfo, work string, ops []op, marks map[string]int) *states {
	s := &states{t: t, fs: fs, ops: ops, scratch: filepath.Join(work, "scratch.img"),
		mnt: filepath.Join(work, "replay"), mountRoot: filepath.Join(work, "replay-mounts"), spent: map[string]time.Duration{}, opened: map[string]imageState{}, opens: map[string]int{}, reused: map[string]int{}}
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
	return strings.Join(parts, ", ") + fmt.Sprintf("; %d crypt opens, %d crypt states the same as one opened before; %d loop mounts, %d loop states the same as one mounted before", s.opens["crypt"], s.reused["crypt"], s.opens["loop"], s.reused["loop"])
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
			d.WaitPurged()
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
	case "crypt", "loop":
		return s.checkImage(d, pt, name, b, e)
	case "tmpfs":
		return nil // nothing of it survives a reboot but its record
	}
	return s.checkFiles(d, name, e.files)
}

// checkImage checks a crypt or loop volume: its image has the size asked
// for, and it mounts (a crypt volume with its key) and holds its files,
// unless its state is byte for byte one that did before.
func (s *states) checkImage(d *driver.Driver, pt paths, name string, record []byte, e *expected) error {
	typ := e.opts["type"]
	dir := filepath.Join(pt.root, "volumes", name)
	fi, err := os.Stat(filepath.Join(dir, "backing.img"))
	if err != nil {
		return fmt.Errorf("its backing file: %w", err)
	}
	if want := imageBytes[typ]; fi.Size() != want {
		return fmt.Errorf("backing file of %d bytes, created with size=%s", fi.Size(), e.opts["size"])
	}
	keyFile := ""
	if typ == "crypt" {
		keyFile = filepath.Join(pt.keyDir, name+".key")
	}
	cs, err := readImageState(dir, keyFile, record, e.files)
	if err != nil {
		return err
	}
	if prev, ok := s.opened[name]; ok && prev.same(cs) {
		s.reused[typ]++
		return nil
	}
	if err := s.checkFiles(d, name, e.files); err != nil {
		return err
	}
	s.opens[typ]++
	s.opened[name] = cs
	return nil
}

// readImageState reads what decides how a crypt or loop volume mounts:
// its record, its key (keyFile, "" for none) and its image.
func readImageState(dir, keyFile string, record []byte, files map[string]string) (imageState, error) {
	var key []byte
	if keyFile != "" {
		var err error
		if key, err = os.ReadFile(keyFile); err != nil {
			return imageState{}, fmt.Errorf("its key: %w", err)
		}
	}
	backing, err := os.ReadFile(filepath.Join(dir, "backing.img"))
	if err != nil {
		return imageState{}, fmt.Errorf("its backing file: %w", err)
	}
	return imageState{record: record, key: key, backing: backing, files: maps.Clone(files)}, nil
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
		pt.root:                           {"holdfast.db": true, "volumes": true, "trash": true, "views": true},
		filepath.Join(pt.root, "volumes"): listed,
		filepath.Join(pt.root, "trash"):   {},
		filepath.Join(pt.root, "views"):   {},
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
