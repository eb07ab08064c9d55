package nfs

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/volfs"
)

// scripted is a mount table for unit tests: FakeMounter underneath, with
// scripted results and calls that can be held until released.
type scripted struct {
	*volfs.FakeMounter
	mu sync.Mutex
	// results are returned by the next Mount calls, in order; a nil entry
	// or an empty list mounts.
	results []error
	// hold, when set, makes Mount wait until it is closed.
	hold chan struct{}
	// unmountErr maps umount2 flags to an error returned instead of
	// unmounting; unmountHold to a channel the call waits for first.
	unmountErr  map[int]error
	unmountHold map[int]chan struct{}
	mounts      []mountCall
	unmounts    []int
}

type mountCall struct {
	source, target, fstype, data string
	flags                        uintptr
}

func newScripted() *scripted {
	return &scripted{FakeMounter: volfs.NewFakeMounter(), unmountErr: map[int]error{}, unmountHold: map[int]chan struct{}{}}
}

func (s *scripted) Mount(source, target, fstype string, flags uintptr, data string) error {
	s.mu.Lock()
	s.mounts = append(s.mounts, mountCall{source, target, fstype, data, flags})
	var err error
	if len(s.results) > 0 {
		err, s.results = s.results[0], s.results[1:]
	}
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if err != nil {
		return err
	}
	return s.FakeMounter.Mount(source, target, fstype, flags, data)
}

func (s *scripted) Unmount(target string, flags int) error {
	s.mu.Lock()
	s.unmounts = append(s.unmounts, flags)
	err, hold := s.unmountErr[flags], s.unmountHold[flags]
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if err != nil {
		return err
	}
	return s.FakeMounter.Unmount(target, flags)
}

func (s *scripted) versions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.mounts {
		o, _ := parseO(m.data)
		v, _ := o.last("vers")
		out = append(out, v)
	}
	return out
}

func (s *scripted) unmountCalls() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.unmounts...)
}

func (s *scripted) isMounted(target string) bool {
	m, _ := s.Mountpoints(target)
	_, ok := m[target]
	return ok
}

// fakeResolver answers from a table and counts lookups.
type fakeResolver struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
	calls int
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	a, ok := f.addrs[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return a, nil
}

// newVolume returns a volume as the driver hands it to the backend.
func newVolume(t *testing.T, b *Backend, raw map[string]string) *driver.Volume {
	t.Helper()
	opts, err := b.Parse(raw)
	require.NoError(t, err)
	return &driver.Volume{Name: "data", Type: TypeNFS, Options: opts, Mountpoint: "/mnt/data"}
}

func errs(e ...error) []error { return e }

func TestMountNegotiation(t *testing.T) {
	tests := []struct {
		name    string
		o       string
		results []error
		tried   []string
		version string // "" when Mount fails
		err     string
	}{
		{name: "newest offered", tried: []string{"4.2"}, version: "4.2"},
		{name: "server without 4.2", results: errs(unix.EPROTONOSUPPORT), tried: []string{"4.2", "4.1"}, version: "4.1"},
		{name: "v3-only server answering v4 with an RPC error", results: errs(unix.EIO, unix.EIO, unix.EIO), tried: []string{"4.2", "4.1", "4.0", "3"}, version: "3"},
		{name: "no NFSv4 listening: straight to v3", results: errs(unix.ECONNREFUSED), tried: []string{"4.2", "3"}, version: "3"},
		{name: "no v4 pseudo-root path: straight to v3", results: errs(unix.ENOENT), tried: []string{"4.2", "3"}, version: "3"},
		{
			name: "nothing listening", results: errs(unix.ECONNREFUSED, unix.ECONNREFUSED), tried: []string{"4.2", "3"},
			err: "mount nfs 10.0.0.5:/export for volume data: connection refused (is an NFS server listening on 10.0.0.5:2049? NFSv3 also needs rpcbind on port 111) [tried NFS 4.2, 3: connection refused]",
		},
		{
			name: "no version offered", results: errs(unix.EPROTONOSUPPORT, unix.EPROTONOSUPPORT, unix.EPROTONOSUPPORT, unix.EPROTONOSUPPORT), tried: []string{"4.2", "4.1", "4.0", "3"},
			err: "protocol not supported (the server offers none of the versions tried) [tried NFS 4.2, 4.1, 4.0, 3: protocol not supported]",
		},
		{name: "timeout is not a version problem", results: errs(unix.ETIMEDOUT), tried: []string{"4.2"}, err: "connection timed out (the server did not answer; check that 10.0.0.5 is up and that a firewall lets TCP port 2049 through)"},
		{name: "no route", results: errs(unix.EHOSTUNREACH), tried: []string{"4.2"}, err: "no route to host (no route to 10.0.0.5; check the address and this host's network)"},
		{name: "no NFS client", results: errs(unix.ENODEV), tried: []string{"4.2"}, err: `mount nfs 10.0.0.5:/export for volume data: this kernel has no NFS client (mount(2) knows no filesystem type "nfs"`},
		{name: "explicit version only", o: "vers=4.1", results: errs(unix.ECONNREFUSED), tried: []string{"4.1"}, err: "mount nfs 10.0.0.5:/export for volume data: connection refused (is an NFS server listening on 10.0.0.5:2049?)"},
		{name: "vers=4 never tries 3", o: "vers=4", results: errs(unix.EIO, unix.EIO, unix.EIO), tried: []string{"4.2", "4.1", "4.0"}, err: "[tried NFS 4.2, 4.1, 4.0: input/output error]"},
		{name: "vers=4 refused", o: "vers=4", results: errs(unix.ECONNREFUSED), tried: []string{"4.2"}, err: "connection refused"},
		{name: "explicit v3 on a port", o: "vers=3,port=2050", results: errs(unix.ECONNREFUSED), tried: []string{"3"}, err: "(is an NFS server listening on 10.0.0.5:2050?)"},
		{name: "access denied", o: "vers=3", results: errs(unix.EACCES), tried: []string{"3"}, err: "permission denied (the server refused access to /export; check that it exports it to this host"},
		{name: "bad option", o: "vers=3,bogus=1", results: errs(unix.EINVAL), tried: []string{"3"}, err: "invalid argument (the kernel refused the mount options rw,nosuid,nodev,bogus=1,vers=3,addr=10.0.0.5; check o"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newScripted()
			m.results = tt.results
			counters := &fakeCounters{}
			b := &Backend{Mounter: m, Counters: counters}
			v := newVolume(t, b, map[string]string{"share": "10.0.0.5:/export", "o": tt.o})
			err := b.Mount(context.Background(), v)
			assert.Equal(t, tt.tried, m.versions())
			attempts, timeouts := counters.counted()
			assert.Equal(t, tt.tried, attempts, "one attempt counted per version tried")
			assert.Zero(t, timeouts)
			if tt.version != "" {
				require.NoError(t, err)
				assert.Equal(t, tt.version, v.Info[infoVersion])
				assert.Equal(t, "10.0.0.5", v.Info[infoAddress])
				assert.True(t, m.isMounted(v.Mountpoint))
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
			assert.NotContains(t, err.Error(), "exit status")
			assert.False(t, m.isMounted(v.Mountpoint))
			assert.Empty(t, v.Info)
		})
	}
}

func TestMountCall(t *testing.T) {
	m := newScripted()
	b := &Backend{Mounter: m}
	v := newVolume(t, b, map[string]string{"o": "addr=127.0.0.1,vers=3,port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp", "device": ":/"})
	require.NoError(t, b.Mount(context.Background(), v))
	require.Len(t, m.mounts, 1)
	assert.Equal(t, mountCall{
		source: "127.0.0.1:/", target: "/mnt/data", fstype: "nfs",
		data:  "port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp,vers=3,addr=127.0.0.1",
		flags: unix.MS_NOSUID | unix.MS_NODEV,
	}, m.mounts[0])
	assert.Equal(t, map[string]string{
		"version": "3", "address": "127.0.0.1",
		"options": "rw,nosuid,nodev,port=2050,mountport=2050,nolock,proto=tcp,mountproto=tcp,vers=3,addr=127.0.0.1",
	}, v.Info)
}

func TestMountResolvesAtEachMount(t *testing.T) {
	m := newScripted()
	r := &fakeResolver{addrs: map[string][]netip.Addr{
		"nas":    {netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("10.0.0.7")},
		"v6only": {netip.MustParseAddr("2001:db8::8")},
	}}
	b := &Backend{Mounter: m, Resolver: r}
	v := newVolume(t, b, map[string]string{"share": "nas:/export", "o": "vers=3,proto=tcp"})

	require.NoError(t, b.Mount(context.Background(), v))
	assert.Equal(t, "10.0.0.7", v.Info[infoAddress], "IPv4 preferred, as Docker's local driver")
	assert.Equal(t, "nas:/export", m.mounts[0].source)
	require.NoError(t, b.Unmount(context.Background(), v))

	// The name moves: the next first Mount follows it.
	r.mu.Lock()
	r.addrs["nas"] = []netip.Addr{netip.MustParseAddr("10.0.0.8")}
	r.mu.Unlock()
	require.NoError(t, b.Mount(context.Background(), v))
	assert.Equal(t, "10.0.0.8", v.Info[infoAddress])
	assert.Contains(t, m.mounts[1].data, "addr=10.0.0.8")
	assert.Equal(t, 2, r.calls)

	v6 := newVolume(t, b, map[string]string{"share": "v6only:/export", "o": "vers=3,proto=tcp"})
	v6.Mountpoint = "/mnt/v6"
	require.NoError(t, b.Mount(context.Background(), v6))
	assert.Equal(t, "proto=tcp6,vers=3,addr=2001:db8::8", m.mounts[2].data)

	bad := newVolume(t, b, map[string]string{"share": "nowhere:/export"})
	err := b.Mount(context.Background(), bad)
	require.Error(t, err)
	assert.Equal(t, "mount nfs nowhere:/export for volume data: cannot resolve server name nowhere: no such host; check the name (the plugin resolves it with the host's /etc/hosts and DNS), or give the server's IP address", err.Error())
	assert.Len(t, m.mounts, 3, "no mount attempt without an address")

	ip := newVolume(t, b, map[string]string{"share": "10.0.0.9:/export"})
	calls := r.calls
	ip.Mountpoint = "/mnt/ip"
	require.NoError(t, b.Mount(context.Background(), ip))
	assert.Equal(t, calls, r.calls, "IP addresses are not looked up")
}

// blockingResolver answers only when the context ends.
type blockingResolver struct{}

func (blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestMountResolveDeadline(t *testing.T) {
	m := newScripted()
	b := &Backend{Mounter: m, Resolver: blockingResolver{}, Timeout: 100 * time.Millisecond}
	v := newVolume(t, b, map[string]string{"share": "nas:/export"})
	start := time.Now()
	err := b.Mount(context.Background(), v)
	assert.Less(t, time.Since(start), time.Second)
	assert.EqualError(t, err, "mount nfs nas:/export for volume data: server name nas was not resolved within the deadline; check this host's DNS servers, or give the server's IP address")
	assert.Empty(t, m.mounts)
}

func TestMountDeadline(t *testing.T) {
	m := newScripted()
	hold := make(chan struct{})
	m.hold = hold
	counters := &fakeCounters{}
	b := &Backend{Mounter: m, Timeout: 200 * time.Millisecond, Counters: counters}
	v := newVolume(t, b, map[string]string{"share": "10.0.0.5:/export"})

	start := time.Now()
	err := b.Mount(context.Background(), v)
	took := time.Since(start)
	require.Error(t, err)
	attempts, timeouts := counters.counted()
	assert.Equal(t, []string{"4.2"}, attempts)
	assert.Equal(t, 1, timeouts, "the abandoned mount(2) is counted as a timeout")
	assert.Less(t, took, time.Second)
	assert.GreaterOrEqual(t, took, 200*time.Millisecond)
	assert.Contains(t, err.Error(), "mount nfs 10.0.0.5:/export for volume data: no answer within 200ms (NFS 4.2 to 10.0.0.5 did not answer; check that the server is up and that a firewall lets TCP port 2049 through, or raise --nfs-timeout; if the mount completes later, holdfast removes it)")
	assert.Equal(t, []string{"4.2"}, m.versions(), "no other version once the deadline has passed")

	// While the abandoned mount(2) is blocked, a new Mount waits for it
	// rather than racing it for the mountpoint, within its own deadline.
	err = b.Mount(context.Background(), v)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "an earlier mount attempt, abandoned")
	assert.Len(t, m.versions(), 1)

	// The kernel completes the abandoned mount after all: it is removed.
	m.mu.Lock()
	m.hold = nil
	m.mu.Unlock()
	close(hold)
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.late) == 0
	}, 5*time.Second, 10*time.Millisecond)
	assert.False(t, m.isMounted(v.Mountpoint), "late mount removed")
	assert.Equal(t, []int{0}, m.unmountCalls())

	require.NoError(t, b.Mount(context.Background(), v), "mounts again once the server answers")
}

func TestUnmount(t *testing.T) {
	ebusy := unix.EBUSY
	tests := []struct {
		name   string
		shared bool
		errs   map[int]error
		hold   []int // umount2 flags that block
		gone   bool  // a blocked plain umount2 has already detached the mount
		calls  []int
		err    string
	}{
		{name: "plain", calls: []int{0}},
		{name: "not mounted", errs: map[int]error{0: unix.EINVAL}, calls: []int{0}},
		{name: "busy: lazy detach only", errs: map[int]error{0: ebusy, unix.MNT_FORCE: ebusy}, calls: []int{0, unix.MNT_DETACH}},
		{name: "busy, shared superblock: lazy detach only", shared: true, errs: map[int]error{0: ebusy}, calls: []int{0, unix.MNT_DETACH}},
		{name: "busy, detach refused", errs: map[int]error{0: ebusy, unix.MNT_DETACH: unix.EPERM}, calls: []int{0, unix.MNT_DETACH}, err: "operation not permitted"},
		{name: "busy, detach blocked", errs: map[int]error{0: ebusy}, hold: []int{unix.MNT_DETACH}, calls: []int{0, unix.MNT_DETACH},
			err: "unmount nfs volume data: /mnt/data is still mounted after 2s, even after a lazy unmount of the busy mount"},
		{name: "blocked but detached", hold: []int{0}, gone: true, calls: []int{0}},
		{name: "blocked, freed by force", hold: []int{0}, calls: []int{0, unix.MNT_FORCE}},
		{name: "blocked and still mounted", hold: []int{0, unix.MNT_FORCE}, errs: map[int]error{0: ebusy, unix.MNT_FORCE: ebusy}, calls: []int{0, unix.MNT_FORCE, unix.MNT_DETACH}},
		{name: "blocked, shared superblock: no force", shared: true, hold: []int{0}, calls: []int{0, unix.MNT_DETACH}},
		{name: "everything blocked", hold: []int{0, unix.MNT_FORCE, unix.MNT_DETACH}, calls: []int{0, unix.MNT_FORCE, unix.MNT_DETACH},
			err: "unmount nfs volume data: /mnt/data is still mounted after 2s, even after a forced and a lazy unmount"},
		{name: "blocked, shared superblock, detach blocked", shared: true, hold: []int{0, unix.MNT_DETACH}, calls: []int{0, unix.MNT_DETACH},
			err: "unmount nfs volume data: /mnt/data is still mounted after 2s, even after a lazy unmount;"},
		{name: "other error", errs: map[int]error{0: unix.EPERM}, calls: []int{0}, err: "operation not permitted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newScripted()
			b := &Backend{Mounter: m, Timeout: 2 * time.Second, shared: func(string) bool { return tt.shared }}
			v := newVolume(t, b, map[string]string{"share": "10.0.0.5:/export"})
			require.NoError(t, b.Mount(context.Background(), v))
			release := make(chan struct{})
			defer close(release)
			for _, f := range tt.hold {
				m.unmountHold[f] = release
			}
			for f, e := range tt.errs {
				m.unmountErr[f] = e
			}
			if tt.gone {
				require.NoError(t, m.FakeMounter.Unmount(v.Mountpoint, 0))
			}
			start := time.Now()
			err := b.Unmount(context.Background(), v)
			assert.Less(t, time.Since(start), b.Timeout+5*time.Second, "returns at its deadline, never hangs")
			assert.Equal(t, tt.calls, m.unmountCalls())
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
		})
	}
}

// TestUnmountBusyNeverForces: a umount2 that fails with EBUSY at once
// means a process uses the mount while the server answers. MNT_FORCE would
// abort the requests in flight on the superblock, which other mounts of the
// export on the host share, so the mount is only detached lazily.
func TestUnmountBusyNeverForces(t *testing.T) {
	m := newScripted()
	m.unmountErr[0] = unix.EBUSY
	m.unmountErr[unix.MNT_FORCE] = unix.EBUSY // as the kernel answers for a busy mount
	log, hook := test.NewNullLogger()
	b := &Backend{Mounter: m, Timeout: 2 * time.Second, Log: log, shared: func(string) bool { return false }}
	v := newVolume(t, b, map[string]string{"share": "10.0.0.5:/export"})
	require.NoError(t, b.Mount(context.Background(), v))

	start := time.Now()
	require.NoError(t, b.Unmount(context.Background(), v))
	assert.Less(t, time.Since(start), 500*time.Millisecond, "a busy mount does not wait for its share of the deadline")
	assert.Equal(t, []int{0, unix.MNT_DETACH}, m.unmountCalls())
	assert.NotContains(t, m.unmountCalls(), unix.MNT_FORCE)
	for _, f := range m.unmountCalls() {
		assert.Zero(t, f&unix.MNT_FORCE, "umount2 flags %#x", f)
	}
	assert.False(t, m.isMounted(v.Mountpoint), "detached")
	assert.True(t, logged(hook, "NFS mount busy: detaching it lazily; the kernel frees it when its last user is gone"))
}

func TestStatus(t *testing.T) {
	b := &Backend{Mounter: nil} // Status must not touch the mount table
	v := newVolume(t, b, map[string]string{"share": "nas:/export", "o": "hard,sec=sys"})
	assert.Equal(t, map[string]any{
		"server": "nas", "export": "/export",
		"version": "negotiated at mount: 4.2, 4.1, 4.0, 3",
		"options": "hard,sec=sys",
	}, b.Status(v))

	v = newVolume(t, b, map[string]string{"share": "nas:/export", "o": "vers=4.1"})
	assert.Equal(t, "4.1", b.Status(v)["version"])

	v.Mounted = true
	v.Info = map[string]string{infoVersion: "4.1", infoAddress: "10.0.0.5", infoOptions: "rw,vers=4.1,addr=10.0.0.5"}
	assert.Equal(t, map[string]any{
		"server": "nas", "export": "/export", "version": "4.1",
		"address": "10.0.0.5", "options": "rw,vers=4.1,addr=10.0.0.5",
	}, withoutExportFigures(b.Status(v)))
}

// TestDriverUnit runs the backend under the core driver on a fake mount
// table: what the driver keeps and shows.
func TestDriverUnit(t *testing.T) {
	root := t.TempDir()
	m := newScripted()
	log, _ := test.NewNullLogger()
	b := &Backend{Mounter: m, Log: log}
	d, err := driver.New(driver.Config{
		Root: root, MountRoot: filepath.Join(root, "mounts"), Scope: "global", BootID: "boot",
		Mounter: m, Log: log, Backends: map[string]driver.Backend{TypeNFS: b},
	})
	require.NoError(t, err)
	defer d.Close()

	opts := map[string]string{"type": "nfs", "o": "addr=10.0.0.5,rw,nfsvers=4.1", "device": ":/export"}
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "data", Options: opts}))
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "data", Options: opts}), "Create is idempotent")
	err = d.Create(&volume.CreateRequest{Name: "data", Options: map[string]string{"type": "nfs", "share": "10.0.0.5:/other"}})
	assert.ErrorIs(t, err, driver.ErrConflict)

	m.results = errs(unix.ECONNREFUSED)
	_, err = d.Mount(&volume.MountRequest{Name: "data", ID: "a"})
	require.Error(t, err)
	assert.Equal(t, "mount data: mount nfs 10.0.0.5:/export for volume data: connection refused (is an NFS server listening on 10.0.0.5:2049?)", err.Error())
	get, err := d.Get(&volume.GetRequest{Name: "data"})
	require.NoError(t, err)
	assert.Equal(t, false, get.Volume.Status["mounted"])
	assert.Equal(t, 0, get.Volume.Status["leases"])

	res, err := d.Mount(&volume.MountRequest{Name: "data", ID: "a"})
	require.NoError(t, err)
	_, err = d.Mount(&volume.MountRequest{Name: "data", ID: "b"})
	require.NoError(t, err)
	assert.Len(t, m.mounts, 2, "one kernel mount for both leases")
	get, err = d.Get(&volume.GetRequest{Name: "data"})
	require.NoError(t, err)
	assert.Equal(t, res.Mountpoint, get.Volume.Mountpoint)
	assert.Equal(t, map[string]any{
		"type": "nfs", "mounted": true, "leases": 2,
		"server": "10.0.0.5", "export": "/export", "version": "4.1", "address": "10.0.0.5",
		"options": "rw,nosuid,nodev,vers=4.1,addr=10.0.0.5",
	}, withoutExportFigures(get.Volume.Status))

	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "data", ID: "a"}))
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "data", ID: "b"}))
	assert.False(t, m.isMounted(res.Mountpoint))
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "data"}))
}
