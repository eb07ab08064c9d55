package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clients is how many clients the concurrency suite runs at once.
const clients = 64

// typeCase is one volume type of the concurrency suite.
type typeCase struct {
	typ  string
	opts map[string]string // base options, with type
}

// typeCases are the types this host runs; crypt only where it can.
func typeCases() []typeCase {
	cases := []typeCase{
		{"local", map[string]string{"type": "local"}},
		{"tmpfs", map[string]string{"type": "tmpfs", "size": "4m"}},
		{"loop", map[string]string{"type": "loop", "size": "16m"}},
	}
	if cryptMissing() == "" {
		cases = append(cases, typeCase{"crypt", map[string]string{"type": "crypt", "size": "32m"}})
	}
	return cases
}

// together runs fn(i) for i < n in n goroutines released at once, and
// returns their errors.
func together(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// requireNoErrors fails t with every non-nil error.
func requireNoErrors(t *testing.T, errs []error, what string) {
	t.Helper()
	var msgs []string
	for i, err := range errs {
		if err != nil {
			msgs = append(msgs, fmt.Sprintf("client %d: %v", i, err))
		}
	}
	require.Empty(t, msgs, what)
}

// requireLeases checks Get's leases and mounted, and that the kernel shows
// the volume mounted exactly once when it has leases (one loop device for
// crypt) and not at all otherwise.
func requireLeases(t *testing.T, p *plugin, name string, tc typeCase, want int) {
	t.Helper()
	n, mounted, err := p.leases(name)
	require.NoError(t, err)
	assert.Equal(t, want, n, "leases of %s", name)
	assert.Equal(t, want > 0, mounted, "Status mounted of %s", name)
	state := map[string]volState{name: {typ: tc.typ, leases: want}}
	leaks, _ := eventually(settleTimeout, func() []string { return p.leakProblems(state) })
	require.Empty(t, leaks)
}

// TestConcurrentMountUnmount (R2): 64 clients each mount and unmount the
// volume twice with fresh mount IDs, then mount it with their own ID and
// (two in three) unmount it again, all at once. Every client must find the
// volume mounted while it holds a lease; at the end the leases are exact,
// the backend is mounted once (crypt: on one loop device), and once the
// rest unmount, nothing is mounted any more.
func TestConcurrentMountUnmount(t *testing.T) {
	requireRoot(t)
	for _, tc := range typeCases() {
		t.Run(tc.typ, func(t *testing.T) {
			p := newPlugin(t)
			p.start()
			name := volPrefix + "m-" + tc.typ
			p.mustCreate(name, tc.opts)
			mp := p.mountpoint(name)
			ids := make([]string, clients)
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
			for i := range ids {
				ids[i] = mountID(r)
			}
			keep := func(i int) bool { return i%3 == 0 }
			errs := together(clients, func(i int) error {
				for cycle := range 2 {
					id := ids[i] + "-" + strconv.Itoa(cycle)
					if err := mountHeld(p, name, id, mp); err != nil {
						return err
					}
					if err := p.unmount(name, id); err != nil {
						return err
					}
				}
				if err := mountHeld(p, name, ids[i], mp); err != nil || keep(i) {
					return err
				}
				return p.unmount(name, ids[i])
			})
			requireNoErrors(t, errs, "mount and unmount")
			kept := 0
			for i := range clients {
				if keep(i) {
					kept++
				}
			}
			requireLeases(t, p, name, tc, kept)

			// Those already released unmount again: harmless.
			errs = together(clients, func(i int) error { return p.unmount(name, ids[i]) })
			requireNoErrors(t, errs, "unmount the rest")
			requireLeases(t, p, name, tc, 0)
			assert.NoDirExists(t, mp, "mountpoint removed at the last unmount")
			p.mustRemove(name)
			requireNoLeaks(t, p)
		})
	}
}

// mountHeld mounts name for id and checks the answer and that the volume
// is mounted while the lease is held.
func mountHeld(p *plugin, name, id, want string) error {
	mp, err := p.mount(name, id)
	if err != nil {
		return err
	}
	if mp != want {
		return fmt.Errorf("mount %s answered %q, want %q", id, mp, want)
	}
	mounted, err := mountinfo.Mounted(mp)
	if err != nil || !mounted {
		return fmt.Errorf("mount %s answered, but %s is not mounted while the lease is held (%v)", id, mp, err)
	}
	return nil
}

// requireNoLeaks checks that the plugin holds no volume and left nothing.
func requireNoLeaks(t *testing.T, p *plugin) {
	t.Helper()
	listed, err := p.list()
	require.NoError(t, err)
	assert.Empty(t, listed)
	leaks, _ := eventually(settleTimeout, func() []string { return p.leakProblems(nil) })
	assert.Empty(t, leaks)
}

// TestConcurrentCreateSameOptions (R2): 64 clients create the same volume
// with the same options at once; all succeed and one volume exists (for
// crypt, with one key and one backing file).
func TestConcurrentCreateSameOptions(t *testing.T) {
	requireRoot(t)
	for _, tc := range typeCases() {
		t.Run(tc.typ, func(t *testing.T) {
			p := newPlugin(t)
			p.start()
			name := volPrefix + "cs-" + tc.typ
			errs := together(clients, func(int) error { return p.create(name, tc.opts) })
			requireNoErrors(t, errs, "create with the same options")
			listed, err := p.list()
			require.NoError(t, err)
			assert.Equal(t, map[string]bool{name: true}, listed)
			leaks := p.leakProblems(map[string]volState{name: {typ: tc.typ}})
			assert.Empty(t, leaks)
			p.collectKeys()
			p.mustRemove(name)
			requireNoLeaks(t, p)
		})
	}
}

// conflictCase makes client i's options differ from every other client's,
// and says from Get or the files which client's options the volume has.
type conflictCase struct {
	typ    string
	opts   func(i int) map[string]string
	option string                                            // the option that differs, as errors name it
	canon  func(i int) string                                // its canonical value
	winner func(t *testing.T, p *plugin, name string) string // the canonical value the volume has
}

func conflictCases() []conflictCase {
	sizeOf := func(t *testing.T, p *plugin, name string) string {
		v, err := p.get(name)
		require.NoError(t, err)
		size, ok := v.Status["size"].(float64)
		require.True(t, ok, "Status size: %v", v.Status)
		return strconv.FormatInt(int64(size), 10)
	}
	cases := []conflictCase{
		{
			typ: "local",
			opts: func(i int) map[string]string {
				return map[string]string{"type": "local", "uid": strconv.Itoa(2000 + i)}
			},
			option: "uid",
			canon:  func(i int) string { return strconv.Itoa(2000 + i) },
			winner: func(t *testing.T, p *plugin, name string) string {
				fi, err := os.Stat(p.volDir(name) + "/data")
				require.NoError(t, err)
				return strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid))
			},
		},
		{
			typ: "tmpfs",
			opts: func(i int) map[string]string {
				return map[string]string{"type": "tmpfs", "size": fmt.Sprintf("%dm", i+1)}
			},
			option: "size",
			canon:  func(i int) string { return strconv.Itoa((i + 1) << 20) },
			winner: sizeOf,
		},
		{
			typ: "loop",
			opts: func(i int) map[string]string {
				return map[string]string{"type": "loop", "size": fmt.Sprintf("%dm", 16+i)}
			},
			option: "size",
			canon:  func(i int) string { return strconv.Itoa((16 + i) << 20) },
			winner: sizeOf,
		},
	}
	if cryptMissing() == "" {
		cases = append(cases, conflictCase{
			typ: "crypt",
			opts: func(i int) map[string]string {
				return map[string]string{"type": "crypt", "size": fmt.Sprintf("%dm", 32+i)}
			},
			option: "size",
			canon:  func(i int) string { return strconv.Itoa((32 + i) << 20) },
			winner: sizeOf,
		})
	}
	return cases
}

// TestConcurrentCreateConflicting (R2): 64 clients create the same volume
// at once, each with other options. Exactly one succeeds, the volume has
// its options, and every other client gets a conflict error naming the
// winner's value as the existing one.
func TestConcurrentCreateConflicting(t *testing.T) {
	requireRoot(t)
	for _, cc := range conflictCases() {
		t.Run(cc.typ, func(t *testing.T) {
			p := newPlugin(t)
			p.start()
			name := volPrefix + "cc-" + cc.typ
			errs := together(clients, func(i int) error { return p.create(name, cc.opts(i)) })
			winners := []int{}
			for i, err := range errs {
				if err == nil {
					winners = append(winners, i)
				}
			}
			require.Len(t, winners, 1, "exactly one create wins: %v", winners)
			w := winners[0]
			assert.Equal(t, cc.canon(w), cc.winner(t, p, name), "the volume has the winner's options")
			existing := fmt.Sprintf("%s: existing %q, requested ", cc.option, cc.canon(w))
			for i, err := range errs {
				if i == w {
					continue
				}
				assert.ErrorContains(t, err, "exists with other options", "client %d", i)
				assert.ErrorContains(t, err, existing, "client %d sees the winner's value", i)
				assert.ErrorContains(t, err, "nothing was changed", "client %d", i)
			}
			assert.Empty(t, p.leakProblems(map[string]volState{name: {typ: cc.typ}}))
			p.collectKeys()
			p.mustRemove(name)
			requireNoLeaks(t, p)
		})
	}
}

// TestConcurrentRemoveAndMount: one client removes the volume while 63
// mount it. Either the Remove came first and every Mount fails with "no
// such volume", or a Mount came first, the Remove is refused and every
// Mount holds a lease.
func TestConcurrentRemoveAndMount(t *testing.T) {
	requireRoot(t)
	for _, tc := range typeCases() {
		t.Run(tc.typ, func(t *testing.T) {
			p := newPlugin(t)
			p.start()
			name := volPrefix + "rm-" + tc.typ
			p.mustCreate(name, tc.opts)
			p.collectKeys()
			var mounted atomic.Int64
			errs := together(clients, func(i int) error {
				if i == 0 {
					return p.remove(name)
				}
				_, err := p.mount(name, fmt.Sprintf("c%02d", i))
				if err == nil {
					mounted.Add(1)
				} else if !strings.Contains(err.Error(), "no such volume") {
					return err
				}
				return nil
			})
			requireNoErrors(t, errs[1:], "mounts")
			if errs[0] == nil {
				assert.Zero(t, mounted.Load(), "Remove succeeded, yet mounts succeeded too")
				requireNoLeaks(t, p)
				return
			}
			assert.ErrorContains(t, errs[0], "is in use by")
			assert.EqualValues(t, clients-1, mounted.Load(), "the volume stayed: every mount holds a lease")
			requireLeases(t, p, name, tc, clients-1)
			for i := 1; i < clients; i++ {
				p.mustUnmount(name, fmt.Sprintf("c%02d", i))
			}
			p.mustRemove(name)
			requireNoLeaks(t, p)
		})
	}
}

// TestSlowCreateBlocksOnlyItsVolume: while a crypt Create is stuck in mkfs,
// requests for other volumes, Get and List answer at once, and the
// unfinished volume is not listed. Once mkfs goes on, the Create completes.
func TestSlowCreateBlocksOnlyItsVolume(t *testing.T) {
	requireRoot(t)
	requireCrypt(t)
	p := newPlugin(t)
	started, release := slowMkfs(t, p)
	p.start()
	slow, other := volPrefix+"slow", volPrefix+"other"
	p.mustCreate(other, map[string]string{"type": "local"})
	errc := make(chan error, 1)
	go func() { errc <- p.create(slow, map[string]string{"type": "crypt", "size": "32m"}) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, waitFile(ctx, started))

	// mkfs stays stuck until release is written below: had these requests
	// waited for the slow Create, they would never have been answered.
	listed, err := p.list()
	require.NoError(t, err)
	assert.Equal(t, map[string]bool{other: true}, listed, "a volume being created is not listed")
	_, err = p.get(slow)
	assert.ErrorContains(t, err, "no such volume", "a volume being created is not there yet")
	p.mustMount(other, "x")
	p.mustUnmount(other, "x")
	p.mustCreate(volPrefix+"third", map[string]string{"type": "tmpfs", "size": "1m"})
	p.mustRemove(volPrefix + "third")
	select {
	case err := <-errc:
		t.Fatalf("the slow Create returned before mkfs was released: %v", err)
	default:
	}

	require.NoError(t, os.WriteFile(release, nil, 0o600))
	require.NoError(t, <-errc, "the slow Create completes")
	p.collectKeys()
	p.mustMount(slow, "y")
	p.mustUnmount(slow, "y")
	p.mustRemove(slow)
	p.mustRemove(other)
	requireNoLeaks(t, p)
}
