package powerloss

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/logwrites"
)

// soak reports whether make soak runs the suite: xfs too, and more seeds.
func soak() bool { return os.Getenv("HOLDFAST_SOAK") == "1" }

// TestPowerLoss replays every flush and FUA point of a logged workload on
// ext4 (and, in make soak, on xfs and over more seeds) and checks each
// crash state. It prints "power loss: N crash states checked" per
// filesystem.
func TestPowerLoss(t *testing.T) {
	guest.Require(t, "device-mapper (dm-log-writes, dm-crypt)")
	if os.Geteuid() != 0 {
		t.Fatal("the power-loss suite mounts filesystems and must run as root (the guest runs tests as root)")
	}
	type run struct {
		fs           string
		seed         uint64
		rounds, maxC int
	}
	runs := []run{{"ext4", 1, 2, 1}}
	if soak() {
		// About 2,800 crash states: longer workloads, two crypt volumes
		// alive at once, on both filesystems.
		runs = append(runs, run{"xfs", 1, 2, 1}, run{"ext4", 2, 4, 2}, run{"xfs", 2, 4, 2}, run{"ext4", 3, 6, 2}, run{"xfs", 3, 6, 2})
	}
	total := map[string]int{}
	for _, r := range runs {
		t.Run(fmt.Sprintf("%s/seed%d", r.fs, r.seed), func(t *testing.T) {
			n := powerLoss(t, filesystems[r.fs], plan(r.seed, r.rounds, r.maxC))
			total[r.fs] += n
		})
	}
	for _, fs := range []string{"ext4", "xfs"} {
		if n, ok := total[fs]; ok {
			fmt.Printf("power loss: %d crash states checked on %s\n", n, fs)
		}
	}
	if !soak() && total["ext4"] < 200 {
		t.Errorf("power loss: only %d crash states on ext4; make test must check at least 200 (lengthen the workload)", total["ext4"])
	}
}

// powerLoss runs ops on fs over dm-log-writes, then checks every crash
// point of the log, and returns how many it checked.
func powerLoss(t *testing.T, fs fsInfo, ops []op) int {
	work := t.TempDir()
	base, img := filepath.Join(work, "base.img"), filepath.Join(work, "data.img")
	logFile := filepath.Join(work, "log.img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, fs.size))
	require.NoError(t, run(fs.mkfs[0], append(fs.mkfs[1:], img)...))
	require.NoError(t, copySparse(base, img))
	require.NoError(t, os.WriteFile(logFile, nil, 0o600))
	require.NoError(t, os.Truncate(logFile, 2<<30))

	t0 := time.Now()
	logged(t, fs, img, logFile, filepath.Join(work, "mounts"), ops)
	t.Logf("workload: %d requests in %v", len(ops), time.Since(t0).Round(time.Millisecond))
	require.NoError(t, os.Remove(img))

	lf, err := os.Open(logFile)
	require.NoError(t, err)
	defer lf.Close()
	l, err := logwrites.Open(lf)
	require.NoError(t, err)
	marks, err := l.Marks()
	require.NoError(t, err)
	for _, o := range ops {
		require.Contains(t, marks, o.mark, "the log lacks the mark of an acknowledged request")
	}
	points := l.CrashPoints()
	t.Logf("log: %d entries, %d flush/FUA points, %d marks", len(l.Entries), len(points), len(marks))

	s := newStates(t, fs, work, ops, marks)
	defer s.close()
	r := logwrites.NewReplayer(l, s.replayImg)
	t1 := time.Now()
	for i, p := range points {
		require.NoError(t, r.ReplayTo(p))
		if err := s.check(p); err != nil {
			t.Fatalf("crash state %d of %d (log entry %d, after %s, during %s): %v", i+1, len(points), p, s.lastAcked(p), s.inFlight(p), err)
		}
	}
	el := time.Since(t1)
	if len(points) > 0 {
		t.Logf("%s: %d crash states in %v, %v each (%s)", fs.name, len(points), el.Round(time.Millisecond), (el / time.Duration(len(points))).Round(time.Millisecond), s.cost())
	}
	return len(points)
}

// logged runs ops against a holdfast whose --root and --key-dir are on fs,
// made on img and mounted through a log-writes target logging to logFile,
// marking the log after each acknowledged request. The target is removed
// on return, which completes the log.
func logged(t *testing.T, fs fsInfo, img, logFile, mountRoot string, ops []op) {
	dev, err := attachLoop(img)
	require.NoError(t, err)
	defer dev.Close()
	ldev, err := attachLoop(logFile)
	require.NoError(t, err)
	defer ldev.Close()
	name := "hf-powerloss"
	table := fmt.Sprintf("0 %d log-writes %s %s", fs.size/512, dev.Path, ldev.Path)
	require.NoError(t, run("dmsetup", "create", name, "--table", table))
	// No udev in the guest: dmsetup makes the node itself.
	require.NoError(t, run("dmsetup", "mknodes", name))
	removed := false
	defer func() {
		if !removed {
			_ = run("dmsetup", "remove", name)
		}
	}()
	mnt := filepath.Join(filepath.Dir(img), "live")
	require.NoError(t, os.Mkdir(mnt, 0o700))
	require.NoError(t, unix.Mount("/dev/mapper/"+name, mnt, fs.name, 0, fs.mountData))
	mounted := true
	defer func() {
		if mounted {
			_ = unix.Unmount(mnt, 0)
		}
	}()
	p := pathsAt(mnt, mountRoot)
	d, err := newDriver(p, "live")
	require.NoError(t, err)
	for i, o := range ops {
		if err := runOp(d, o, p.mountRoot); err != nil {
			d.Close()
			t.Fatalf("request %d (%s %s): %v", i, o.kind, o.vol, err)
		}
		require.NoError(t, run("dmsetup", "message", name, "0", "mark", o.mark))
	}
	require.NoError(t, d.Close())
	require.NoError(t, unix.Unmount(mnt, 0))
	mounted = false
	require.NoError(t, run("dmsetup", "remove", name))
	removed = true
}

// mountsUnder lists the mountpoints at or below dir, for leak checks.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}
