package crypt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/snapshot"
	"github.com/holdfast/holdfast/internal/volfs"
)

// cloneLimit bounds the freeze around the image's reflink copy, which
// takes milliseconds: a copy that outlasts it is not point-in-time.
const cloneLimit = 30 * time.Second

// What a snapshot keeps in its directory: names of crypt's own, so that
// another backend's release (every Snapshotter is asked to release every
// view's directory) never takes the image from under the mapping.
func snapImage(dir string) string { return filepath.Join(dir, "luks.img") }
func snapFS(dir string) string    { return filepath.Join(dir, "fs") }

// snapMapping is the device-mapper name of the snapshot in dir: from the
// directory's path, which stays the same until it is released (the image
// may already be gone when a crash is cleaned up).
func snapMapping(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "holdfast-view-" + hex.EncodeToString(sum[:6])
}

// FreezeDir is where the volume's filesystem is mounted.
func (b *Backend) FreezeDir(v *driver.Volume) string { return stagingDir(v) }

// Snapshot takes a point-in-time copy of a LUKS volume: its filesystem
// frozen, the image cloned by reflink into dir, thawed (always, within
// cloneLimit), then the clone opened read-only with the volume's key
// under a mapping of its own and mounted read-only. fscrypt volumes, and
// a --root without reflinks, wrap driver.ErrNoSnapshot.
func (b *Backend) Snapshot(ctx context.Context, v *driver.Volume, dir string) (files string, err error) {
	if v.Info[infoEngine] != EngineLUKS {
		return "", fmt.Errorf("%w: engine=%s volumes are copied live", driver.ErrNoSnapshot, v.Info[infoEngine])
	}
	key, err := b.key(v)
	if err != nil {
		return "", err
	}
	defer clear(key)
	err = snapshot.CloneFrozen(stagingDir(v), backingFile(v), snapImage(dir), cloneLimit, func() error { return b.step("clone image") })
	if errors.Is(err, snapshot.ErrNoReflink) {
		return "", fmt.Errorf("%w: %v", driver.ErrNoSnapshot, err)
	}
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.ReleaseSnapshot(ctx, dir))
		}
	}()
	if err := b.step("attach snapshot"); err != nil {
		return "", err
	}
	loop, err := loopdev.Attach(snapImage(dir))
	if err != nil {
		return "", fmt.Errorf("attach the snapshot: %w", err)
	}
	defer loop.Close() // the mapping holds it
	name := snapMapping(dir)
	if err := b.cryptsetup(ctx, key, "open", "--readonly", "--type", "luks2", "--key-file", "-", loop.Path, name); err != nil {
		return "", err
	}
	if err := os.MkdirAll(snapFS(dir), 0o700); err != nil {
		return "", err
	}
	data := "noload"
	if v.Options["fs"] == "xfs" {
		data = "norecovery,nouuid"
	}
	err = b.step("mount snapshot")
	if err == nil {
		err = b.Mounter.Mount(mappingPath(name), snapFS(dir), v.Options["fs"], unix.MS_RDONLY|nodevNosuid, data)
	}
	if err != nil {
		return "", err
	}
	return filepath.Join(snapFS(dir), "data"), nil
}

// ReleaseSnapshot unmounts a snapshot in dir, closes its mapping,
// detaches its loop device and deletes its image; harmless where there
// is none.
func (b *Backend) ReleaseSnapshot(ctx context.Context, dir string) error {
	if err := volfs.UnmountPath(b.Mounter, snapFS(dir)); err != nil {
		return err
	}
	if err := b.luksClose(ctx, snapMapping(dir)); err != nil {
		return err
	}
	if err := loopdev.Detach(snapImage(dir)); err != nil {
		return err
	}
	if err := os.Remove(snapImage(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
