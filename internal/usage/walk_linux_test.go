package usage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// requireRoot fails (never skips) without root: these tests mount tmpfs
// so that block counts are exact (a tmpfs directory holds no blocks, a
// file exactly its pages), and make test runs them as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount a tmpfs for exact block counts (make test runs as root)")
	}
}

// tmpfsDir mounts a fresh tmpfs and returns it; unmounted at cleanup.
func tmpfsDir(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	require.NoError(t, unix.Mount("usagetest", dir, "tmpfs", 0, "size=256m"))
	t.Cleanup(func() { require.NoError(t, unix.Unmount(dir, unix.MNT_DETACH)) })
	return dir
}

func writeFile(t *testing.T, path string, n int) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, make([]byte, n), 0o644))
}

func testCfg() Config { return Config{}.withDefaults() }

func TestWalk(t *testing.T) {
	tests := []struct {
		name string
		// setup fills root; other is a second tmpfs for what lies outside.
		setup       func(t *testing.T, root, other string)
		cfg         func(*Config)
		bytes       int64
		below       int64 // when bytes is -1: bytes must be less
		entries     int64
		incomplete  string
		overcount   string
		errContains string
	}{
		{name: "empty directory", setup: func(*testing.T, string, string) {}, bytes: 0, entries: 1},
		{name: "files count their blocks", setup: func(t *testing.T, root, _ string) {
			writeFile(t, root+"/a", mib)
			writeFile(t, root+"/d/b", 3*mib)
			writeFile(t, root+"/d/e/c", 1) // one page
		}, bytes: 4*mib + 4096, entries: 6},
		{name: "a sparse file counts what it holds, not its length", setup: func(t *testing.T, root, _ string) {
			f, err := os.Create(root + "/sparse")
			require.NoError(t, err)
			require.NoError(t, f.Truncate(1<<30))
			_, err = f.WriteAt(make([]byte, mib), 100*mib)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}, bytes: mib, entries: 2},
		{name: "hard links count once", setup: func(t *testing.T, root, _ string) {
			writeFile(t, root+"/f", 2*mib)
			require.NoError(t, os.Mkdir(root+"/d", 0o755))
			for i := range 3 {
				require.NoError(t, os.Link(root+"/f", fmt.Sprintf("%s/d/l%d", root, i)))
			}
		}, bytes: 2 * mib, entries: 3},
		{name: "hard links past MaxLinks are counted again, and said so", setup: func(t *testing.T, root, _ string) {
			writeFile(t, root+"/f", mib)
			writeFile(t, root+"/g", mib)
			require.NoError(t, os.Link(root+"/f", root+"/f2"))
			require.NoError(t, os.Link(root+"/g", root+"/g2"))
		}, cfg: func(c *Config) { c.MaxLinks = 1 }, bytes: 3 * mib, entries: 4,
			overcount: "may be counted more than once"},
		{name: "symlinks are not followed", setup: func(t *testing.T, root, other string) {
			writeFile(t, other+"/big", 8*mib)
			require.NoError(t, os.Symlink(other+"/big", root+"/file-link"))
			require.NoError(t, os.Symlink(other, root+"/dir-link"))
		}, bytes: -1, below: mib, entries: 3},
		{name: "another mount inside is not entered", setup: func(t *testing.T, root, _ string) {
			require.NoError(t, os.Mkdir(root+"/m", 0o755))
			require.NoError(t, unix.Mount("usagetest-inner", root+"/m", "tmpfs", 0, "size=16m"))
			t.Cleanup(func() { unix.Unmount(root+"/m", unix.MNT_DETACH) })
			writeFile(t, root+"/m/x", 4*mib)
			writeFile(t, root+"/y", mib)
		}, bytes: mib, entries: 2},
		{name: "a bind mount of the same filesystem inside is not entered", setup: func(t *testing.T, root, _ string) {
			writeFile(t, root+"/src/x", 2*mib)
			require.NoError(t, os.Mkdir(root+"/bound", 0o755))
			require.NoError(t, unix.Mount(root+"/src", root+"/bound", "", unix.MS_BIND, ""))
			t.Cleanup(func() { unix.Unmount(root+"/bound", unix.MNT_DETACH) })
		}, bytes: 2 * mib, entries: 3},
		{name: "the entry budget stops the walk with a lower bound", setup: func(t *testing.T, root, _ string) {
			for i := range 500 {
				writeFile(t, fmt.Sprintf("%s/f%03d", root, i), 1)
			}
		}, cfg: func(c *Config) { c.MaxEntries = 100 }, incomplete: "budget of 100 entries",
			bytes: -1, entries: -1},
		{name: "the time budget stops the walk with a lower bound", setup: func(t *testing.T, root, _ string) {
			writeFile(t, root+"/a/b", 1)
		}, cfg: func(c *Config) { c.MaxDuration = time.Nanosecond }, incomplete: "budget of 1ns",
			bytes: -1, entries: -1},
		{name: "directories deeper than MaxDepth are counted but not entered", setup: func(t *testing.T, root, _ string) {
			writeFile(t, root+"/1/2/3/4/f", mib)
			writeFile(t, root+"/1/g", mib)
		}, cfg: func(c *Config) { c.MaxDepth = 2 }, bytes: mib, entries: 5,
			incomplete: "1 directories deeper than 2 levels"},
		{name: "a missing directory is an error", setup: func(t *testing.T, root, _ string) {
			require.NoError(t, os.Remove(root))
		}, errContains: "no such file or directory"},
		{name: "a symlink as the root is refused", setup: func(t *testing.T, root, other string) {
			require.NoError(t, os.Remove(root))
			require.NoError(t, os.Symlink(other, root))
		}, errContains: "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, other := tmpfsDir(t), tmpfsDir(t)
			root := base + "/vol"
			require.NoError(t, os.Mkdir(root, 0o755))
			tc.setup(t, base+"/vol", other)
			cfg := testCfg()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			r := walk(context.Background(), root, cfg, time.Now)
			if tc.errContains != "" {
				assert.Contains(t, r.Err, tc.errContains)
				assert.Zero(t, r.Bytes)
				return
			}
			require.Empty(t, r.Err)
			if tc.bytes >= 0 {
				assert.Equal(t, tc.bytes, r.Bytes, "bytes")
			}
			if tc.below > 0 {
				assert.Less(t, r.Bytes, tc.below, "bytes")
			}
			if tc.entries >= 0 {
				assert.Equal(t, tc.entries, r.Entries, "entries")
			}
			if tc.incomplete == "" {
				assert.Empty(t, r.Incomplete)
			} else {
				assert.Contains(t, r.Incomplete, tc.incomplete)
			}
			if tc.overcount == "" {
				assert.Empty(t, r.Overcount)
			} else {
				assert.Contains(t, r.Overcount, tc.overcount)
			}
		})
	}
}

// TestWalkEntryBudgetIsLowerBound: a walk cut by its budget counted at
// most what it was allowed and never more than the whole.
func TestWalkEntryBudgetIsLowerBound(t *testing.T) {
	root := tmpfsDir(t)
	for i := range 300 {
		writeFile(t, fmt.Sprintf("%s/d%d/f%d", root, i%7, i), 4096)
	}
	full := walk(context.Background(), root, testCfg(), time.Now)
	require.Empty(t, full.Incomplete)
	require.Equal(t, int64(1+7+300), full.Entries)
	cfg := testCfg()
	cfg.MaxEntries = 50
	cut := walk(context.Background(), root, cfg, time.Now)
	assert.NotEmpty(t, cut.Incomplete)
	assert.Less(t, cut.Bytes, full.Bytes)
	// The budget is checked once per batch of names.
	assert.LessOrEqual(t, cut.Entries, int64(50+batch))
}

// TestWalkManyFiles walks 100,000 files in a deep and wide tree: every
// one counted exactly once, with no more open directories than levels.
func TestWalkManyFiles(t *testing.T) {
	root := tmpfsDir(t)
	const dirs, perDir = 100, 1000
	for d := range dirs {
		// Nested four deep so the walk goes down and back up.
		dir := fmt.Sprintf("%s/a%d/b%d/c%d", root, d%5, d%17, d)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for f := range perDir {
			fd, err := unix.Open(fmt.Sprintf("%s/f%d", dir, f), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			require.NoError(t, err)
			if f == 0 {
				_, err = unix.Write(fd, []byte("x"))
				require.NoError(t, err)
			}
			unix.Close(fd)
		}
	}
	var dirCount int64
	require.NoError(t, filepath.WalkDir(root, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirCount++
		}
		return err
	}))
	r := walk(context.Background(), root, testCfg(), time.Now)
	require.Empty(t, r.Err)
	assert.Empty(t, r.Incomplete)
	assert.Equal(t, dirCount+dirs*perDir, r.Entries)
	assert.Equal(t, int64(dirs*4096), r.Bytes, "one page in the first file of each directory")
	t.Logf("walked %d entries in %v", r.Entries, r.Took)
}

// TestWalkCancelled: a cancelled walk stops at once and says so.
func TestWalkCancelled(t *testing.T) {
	root := tmpfsDir(t)
	writeFile(t, root+"/a/b", 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := walk(ctx, root, testCfg(), time.Now)
	assert.True(t, strings.Contains(r.Incomplete, "cancelled"), r.Incomplete)
}

// TestWalkKeepsAccessTimes: measuring a volume reads its directories
// without changing their atimes (relatime would update an atime older than
// a day), so a backup taken later keeps the times the files had.
func TestWalkKeepsAccessTimes(t *testing.T) {
	root := tmpfsDir(t)
	writeFile(t, root+"/a/b/f", 1)
	old := time.Date(1990, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, d := range []string{root + "/a/b", root + "/a", root} {
		require.NoError(t, os.Chtimes(d, old, old))
	}
	r := walk(context.Background(), root, testCfg(), time.Now)
	require.Empty(t, r.Err)
	require.EqualValues(t, 4, r.Entries)
	for _, d := range []string{root, root + "/a", root + "/a/b"} {
		var st unix.Stat_t
		require.NoError(t, unix.Stat(d, &st))
		assert.Equal(t, old.Unix(), st.Atim.Sec, "atime of %s", d)
	}
}

// BenchmarkWalkMillion walks a tree of a million empty files (built once,
// about a minute): run with -bench WalkMillion -benchtime 3x.
func BenchmarkWalkMillion(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root to mount a tmpfs")
	}
	root := b.TempDir()
	require.NoError(b, unix.Mount("usagebench", root, "tmpfs", 0, "size=2g,nr_inodes=2m"))
	defer unix.Unmount(root, unix.MNT_DETACH)
	for d := range 1000 {
		dir := fmt.Sprintf("%s/d%d", root, d)
		require.NoError(b, os.Mkdir(dir, 0o755))
		for f := range 1000 {
			fd, err := unix.Open(fmt.Sprintf("%s/f%d", dir, f), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			require.NoError(b, err)
			unix.Close(fd)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := walk(context.Background(), root, testCfg(), time.Now)
		if r.Entries != 1_001_001 || r.Incomplete != "" {
			b.Fatalf("walk: %+v", r)
		}
	}
}
