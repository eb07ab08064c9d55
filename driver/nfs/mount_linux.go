package nfs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
)

var _ driver.Backend = (*Backend)(nil)

// lateMount is a mount(2) abandoned at its deadline that has not returned.
type lateMount struct {
	since  time.Time
	source string
	// done is closed once mount(2) has returned and, if it succeeded, the
	// mount has been removed again.
	done chan struct{}
}

// Mount resolves the server's name, then mounts the export at
// v.Mountpoint with the newest NFS version that works, all within the
// deadline. It records the version, address and options in v.Info.
func (b *Backend) Mount(ctx context.Context, v *driver.Volume) error {
	c, err := configOf(b.typ(), v.Options)
	if err != nil {
		return fmt.Errorf("mount nfs for volume %s: %w", v.Name, err)
	}
	source := bracket(c.host) + ":" + c.export
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, b.timeout())
	defer cancel()
	if err := b.waitLate(ctx, v.Mountpoint); err != nil {
		return fmt.Errorf("mount nfs %s for volume %s: %w", source, v.Name, err)
	}
	addr, err := b.resolve(ctx, c.host)
	if err != nil {
		return fmt.Errorf("mount nfs %s for volume %s: %w", source, v.Name, err)
	}
	tried, err := b.negotiate(ctx, v.Mountpoint, c, addr, start)
	if err != nil {
		return mountError(source, v.Name, tried)
	}
	a := tried[len(tried)-1].attempt
	record(v, a)
	b.exportStats().resume(v.Mountpoint)
	b.log().WithFields(logrus.Fields{"volume": v.Name, "source": source, "version": a.version,
		"address": a.addr.String(), "took": time.Since(start).Round(time.Millisecond)}).Debug("NFS volume mounted")
	return nil
}

// negotiate tries the candidate versions, newest first, until one mounts
// or a failure shows that older versions would not help. It returns the
// attempts made, the last being the one that mounted when err is nil.
func (b *Backend) negotiate(ctx context.Context, target string, c config, addr netip.Addr, start time.Time) ([]outcome, error) {
	cands := c.candidates(b.typ())
	var tried []outcome
	for i := 0; i < len(cands); i++ {
		a := c.attempt(cands[i], addr)
		err := b.mountWithin(ctx, target, a, start)
		tried = append(tried, outcome{attempt: a, err: err})
		if err == nil {
			return tried, nil
		}
		next, toV3 := fallback(err)
		switch {
		case toV3 && slices.Contains(cands[i+1:], "3"):
			i = slices.Index(cands, "3") - 1 // skip the other 4.x versions
		case !next:
			return tried, err
		}
	}
	return tried, tried[len(tried)-1].err
}

// mountWithin runs one mount(2) and waits for it until ctx is done. A
// mount(2) still blocked then is abandoned: it fails with *noAnswer, and
// if the kernel completes the mount later, the mount is removed.
func (b *Backend) mountWithin(ctx context.Context, target string, a attempt, start time.Time) error {
	if ctx.Err() != nil {
		return &noAnswer{after: time.Since(start)}
	}
	if b.Counters != nil {
		b.Counters.NFSMountAttempt(a.version)
	}
	result := make(chan error, 1)
	go func() { result <- b.Mounter.Mount(a.source, target, "nfs", a.flags, a.data) }()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		if b.Counters != nil {
			b.Counters.NFSMountTimeout()
		}
		b.abandon(target, a.source, result)
		return &noAnswer{after: time.Since(start)}
	}
}

// abandon hands a blocked mount(2) over to a goroutine that waits for it
// and removes the mount if it succeeds after all.
func (b *Backend) abandon(target, source string, result <-chan error) {
	l := &lateMount{since: time.Now(), source: source, done: make(chan struct{})}
	b.mu.Lock()
	if b.late == nil {
		b.late = map[string]*lateMount{}
	}
	b.late[target] = l
	b.mu.Unlock()
	go b.reap(target, l, result)
}

func (b *Backend) reap(target string, l *lateMount, result <-chan error) {
	defer func() {
		b.mu.Lock()
		if b.late[target] == l {
			delete(b.late, target)
		}
		b.mu.Unlock()
		close(l.done)
	}()
	log := b.log().WithFields(logrus.Fields{"mountpoint": target, "source": l.source})
	if err := <-result; err != nil {
		log.WithError(err).Info("an NFS mount abandoned at its deadline has failed; nothing to undo")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout())
	defer cancel()
	if err := b.unmount(ctx, target); err != nil {
		log.WithError(err).Error("an NFS mount abandoned at its deadline completed later and could not be removed; unmount it by hand")
		return
	}
	log.Warn("an NFS mount abandoned at its deadline completed later; it was removed")
}

// waitLate waits, within ctx, for an abandoned mount(2) on target to end,
// so that two attempts never race for one mountpoint.
func (b *Backend) waitLate(ctx context.Context, target string) error {
	b.mu.Lock()
	l := b.late[target]
	b.mu.Unlock()
	if l == nil {
		return nil
	}
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("an earlier mount attempt, abandoned %v ago at its deadline, is still blocked in the kernel waiting for the server (holdfast removes that mount if it completes); check the server and try again",
			time.Since(l.since).Round(time.Second))
	}
}

// record notes in v.Info what the mount uses.
func record(v *driver.Volume, a attempt) {
	if v.Info == nil {
		v.Info = map[string]string{}
	}
	v.Info[infoVersion] = a.version
	v.Info[infoAddress] = a.addr.String()
	v.Info[infoOptions] = a.describe()
}

// Unmount unmounts v.Mountpoint within the deadline, also when the server
// is gone.
func (b *Backend) Unmount(ctx context.Context, v *driver.Volume) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout())
	defer cancel()
	stats := b.exportStats()
	if stats.quiesce(v.Mountpoint, min(b.timeout()/4, statfsWait)) {
		b.log().WithField("mountpoint", v.Mountpoint).Warn("the NFS server has not answered holdfast's statfs of the export: unmounting anyway; the statfs holds the mount, so it is detached lazily and freed when the server answers")
	}
	if err := b.unmount(ctx, v.Mountpoint); err != nil {
		stats.resume(v.Mountpoint)
		return fmt.Errorf("unmount nfs volume %s: %w", v.Name, err)
	}
	stats.forget(v.Mountpoint)
	return nil
}

// unmount removes the NFS mount at target before ctx's deadline. A plain
// umount2 gets half of the time.
//
// A mount that is busy (umount2 returns EBUSY: a process has its working
// directory or an open file there) is detached lazily with MNT_DETACH and
// nothing else: it leaves the mount tree at once and the kernel frees it
// when its last user is gone, with the server still answering that user.
// It is never forced: MNT_FORCE aborts the requests in flight on the
// superblock, which the kernel's NFS client shares among mounts of one
// export with the same options, so it would lose writes of processes that
// have nothing to do with holdfast.
//
// Only a plain umount2 still blocked at its share of the deadline, with the
// mount still there, is stuck on a server that does not answer: then
// MNT_FORCE aborts the requests waiting for it (skipped when other mounts
// share the superblock) before MNT_DETACH takes the mount out of the tree.
func (b *Backend) unmount(ctx context.Context, target string) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(b.timeout())
	}
	total := time.Until(deadline)
	log := b.log().WithField("mountpoint", target)
	returned, err := b.umountWithin(target, 0, total/2)
	switch {
	case returned && (err == nil || notMounted(err)):
		return nil
	case returned && errors.Is(err, unix.EBUSY):
		log.Warn("NFS mount busy: detaching it lazily; the kernel frees it when its last user is gone")
		return b.detach(target, deadline, total, "a lazy unmount of the busy mount")
	case returned:
		return err
	case !b.mounted(target):
		log.Warn("NFS mount detached; the kernel finishes releasing it in the background")
		return nil
	}
	if b.sharesSuperblock(target) {
		log.Warn("NFS mount not answering, and its superblock serves other mounts: detaching it lazily without forcing")
		return b.detach(target, deadline, total, "a lazy unmount")
	}
	log.Warn("NFS mount not answering: forcing the unmount, which aborts requests waiting for the server")
	returned, err = b.umountWithin(target, unix.MNT_FORCE, total/4)
	if returned && (err == nil || notMounted(err)) || !b.mounted(target) {
		return nil
	}
	log.Warn("NFS mount still there after a forced unmount: detaching it lazily; the kernel frees it when its last user is gone")
	return b.detach(target, deadline, total, "a forced and a lazy unmount")
}

// detach runs umount2(target, MNT_DETACH) until deadline. tried says, for
// the error when the mount is still there then, what was tried.
func (b *Backend) detach(target string, deadline time.Time, total time.Duration, tried string) error {
	returned, err := b.umountWithin(target, unix.MNT_DETACH, time.Until(deadline))
	switch {
	case returned && (err == nil || notMounted(err)), !b.mounted(target):
		return nil
	case returned:
		return err
	}
	return fmt.Errorf("%s is still mounted after %v, even after %s; the kernel may be stuck on the server",
		target, total.Round(100*time.Millisecond), tried)
}

// umountWithin runs umount2(target, flags) and waits for it up to wait.
// returned is false if it was still running then.
func (b *Backend) umountWithin(target string, flags int, wait time.Duration) (returned bool, err error) {
	result := make(chan error, 1)
	go func() { result <- b.Mounter.Unmount(target, flags) }()
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	select {
	case err := <-result:
		return true, err
	case <-t.C:
		b.log().WithFields(logrus.Fields{"mountpoint": target, "flags": flags}).Warn("umount2 still blocked; going on without it")
		return false, nil
	}
}

// notMounted reports an umount2 error meaning there is nothing to unmount.
func notMounted(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT)
}

// mounted reports whether target is a mountpoint, from mountinfo. When in
// doubt it says yes.
func (b *Backend) mounted(target string) bool {
	m, err := b.Mounter.Mountpoints(target)
	if err != nil {
		return true
	}
	_, ok := m[target]
	return ok
}

// sharesSuperblock reports whether another mount shows the same
// filesystem as target: the kernel's NFS client shares one superblock
// among mounts of one server export with the same options, and MNT_FORCE
// aborts the requests of all of them.
func (b *Backend) sharesSuperblock(target string) bool {
	if b.shared != nil {
		return b.shared(target)
	}
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		return true
	}
	var dev *mountinfo.Info
	for _, m := range infos {
		if m.Mountpoint == target {
			dev = m
		}
	}
	if dev == nil {
		return false
	}
	for _, m := range infos {
		if m.Major == dev.Major && m.Minor == dev.Minor && m.ID != dev.ID {
			return true
		}
	}
	return false
}
