// Package crypt is holdfast's "crypt" volume type: an AES-256 encrypted,
// size-limited loopback file, through LUKS2 (dm-crypt) or ext4's native
// encryption (fscrypt) where the kernel has no device-mapper.
package crypt

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Engines.
const (
	EngineLUKS    = "luks"
	EngineFscrypt = "fscrypt"
	engineAuto    = "auto"
)

const fscryptCipher = "AES-256-XTS contents, AES-256-CTS file names (fscrypt v2 policy)"

// Minimum sizes: a LUKS2 header takes 16 MiB, and mkfs.xfs refuses
// filesystems under 300 MB.
const (
	minSize    = 32 << 20
	minSizeXFS = 320 << 20
)

// Info keys this backend records.
const (
	infoEngine = "engine"
	infoKey    = "key"   // "generated" or "keyfile"
	infoKeyID  = "keyId" // fscrypt key identifier: derived from the key, not secret
)

// Backend is the "crypt" backend.
type Backend struct {
	Mounter volfs.Mounter
	// KeyDir holds the keys (--key-dir); never under --root, so a copy of
	// the data does not carry its keys.
	KeyDir string
	// Faults fails steps on purpose, for tests; nil in production.
	Faults *failpoint.Set
}

// New returns the crypt backend on mounter, its keys in keyDir.
func New(mounter volfs.Mounter, keyDir string) *Backend {
	return &Backend{Mounter: mounter, KeyDir: keyDir}
}

// step names a fallible step, which tests may fail on purpose.
func (b *Backend) step(name string) error { return b.Faults.Check(name) }

var options = []driver.Option{
	{Name: "size", Form: "a size of at least 32m such as 512m or 10g", Required: true, Canon: driver.CanonSize},
	{Name: "fs", Form: "ext4 or xfs", Default: "ext4", Canon: driver.CanonEnum("ext4", "xfs")},
	{Name: "engine", Form: "auto, luks or fscrypt", Default: engineAuto, Canon: driver.CanonEnum(engineAuto, EngineLUKS, EngineFscrypt)},
	{Name: "keyfile", Form: "the name of a file in --key-dir holding 64 random bytes", Canon: checkKeyfileName},
	driver.OptUID, driver.OptGID, driver.OptMode,
}

// Parse checks the options; options that would carry key material are
// refused before anything else.
func (b *Backend) Parse(raw map[string]string) (map[string]string, error) {
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if driver.Sensitive(k) {
			return nil, fmt.Errorf("%w %q: key material never goes in an option, because docker volume inspect shows every option to every Docker user; put the key (64 random bytes) in a file in the key directory and pass keyfile=NAME",
				driver.ErrInvalidOption, k)
		}
	}
	opts, err := driver.ParseOptions("crypt", raw, options)
	if err != nil {
		return nil, err
	}
	size := volfs.Size(opts)
	switch {
	case opts["fs"] == "xfs" && opts["engine"] == EngineFscrypt:
		return nil, fmt.Errorf("%w: engine=fscrypt works with fs=ext4 only (XFS has no native encryption); use fs=ext4 or engine=luks", driver.ErrInvalidOption)
	case opts["fs"] == "xfs" && size < minSizeXFS:
		return nil, fmt.Errorf("%w size=%q: XFS needs at least 320m (300 MB for XFS, 16 MiB for the LUKS header)", driver.ErrInvalidOption, raw["size"])
	case size < minSize:
		return nil, fmt.Errorf("%w size=%q: a crypt volume needs at least 32m", driver.ErrInvalidOption, raw["size"])
	}
	return opts, nil
}

// engine decides the engine for new volume v, or says what is missing.
func engine(opts map[string]string) (string, error) {
	luksErr := luksAvailable()
	switch opts["engine"] {
	case EngineLUKS:
		if luksErr != nil {
			return "", fmt.Errorf("engine=luks: %w; use engine=fscrypt (ext4 only) on this host", luksErr)
		}
		return EngineLUKS, nil
	case EngineFscrypt:
		if err := fscryptAvailable(); err != nil {
			return "", fmt.Errorf("engine=fscrypt: %w", err)
		}
		return EngineFscrypt, nil
	}
	if luksErr == nil {
		return EngineLUKS, nil
	}
	if opts["fs"] == "xfs" {
		return "", fmt.Errorf("engine=auto with fs=xfs needs LUKS: %w; use fs=ext4 (fscrypt)", luksErr)
	}
	if err := fscryptAvailable(); err != nil {
		return "", fmt.Errorf("no encryption engine on this host: LUKS: %v; fscrypt: %w", luksErr, err)
	}
	return EngineFscrypt, nil
}

// The backing file, the staging directory of its filesystem and the
// volume's root inside it, laid out as loopdev says.
func backingFile(v *driver.Volume) string { return loopdev.ImageFile(v.Dir) }
func stagingDir(v *driver.Volume) string  { return loopdev.StagingDir(v.Dir) }
func dataDir(v *driver.Volume) string     { return loopdev.RootDir(v.Dir) }

func (b *Backend) keys() keyStore { return keyStore{dir: b.KeyDir, faults: b.Faults} }

// Create makes the key (unless keyfile is given), the backing file with
// all its space allocated, the encryption and the filesystem, with the
// volume's root directory inside it. On error it leaves nothing behind.
func (b *Backend) Create(ctx context.Context, v *driver.Volume) (err error) {
	eng, err := engine(v.Options)
	if err != nil {
		return err
	}
	v.Info = map[string]string{infoEngine: eng}
	defer func() {
		if err != nil {
			b.Remove(ctx, v)
		}
	}()
	if _, ok := v.Options["keyfile"]; ok {
		v.Info[infoKey] = "keyfile"
	} else {
		if err := b.keys().generate(v.Name); err != nil {
			v.Info[infoKey] = "existing" // not this Create's: Remove must leave it
			return err
		}
		v.Info[infoKey] = "generated"
	}
	key, err := b.key(v)
	if err != nil {
		return err
	}
	defer clear(key)
	if err := b.step("allocate backing file"); err != nil {
		return err
	}
	if err := loopdev.AllocateImage(backingFile(v), volfs.Size(v.Options)); err != nil {
		return volfs.RootFull(err, v.Dir)
	}
	if eng == EngineLUKS {
		if err := b.cryptsetup(ctx, key, append(luksFormatArgs, backingFile(v))...); err != nil {
			return err
		}
	}
	if err := b.format(ctx, v, key); err != nil {
		return err
	}
	// The header and the filesystem went through the loop device into
	// the page cache: durable before the driver commits the record.
	if err := b.step("sync backing file"); err != nil {
		return err
	}
	return volfs.SyncPath(backingFile(v))
}

// format attaches the backing file, makes the filesystem and its root
// directory, and takes everything down again.
func (b *Backend) format(ctx context.Context, v *driver.Volume, key []byte) error {
	dev, closeLoop, err := b.open(ctx, v, key)
	if err != nil {
		return err
	}
	defer closeLoop()
	if err := b.step("mkfs"); err != nil {
		return err
	}
	var features []string
	if v.Info[infoEngine] == EngineFscrypt {
		features = []string{"encrypt"}
	}
	if err := loopdev.Mkfs(ctx, dev, v.Options["fs"], features...); err != nil {
		return err
	}
	if err := b.mountFS(dev, v); err != nil {
		return err
	}
	if v.Info[infoEngine] == EngineFscrypt {
		id, err := b.addKey(stagingDir(v), key)
		if err != nil {
			return err
		}
		v.Info[infoKeyID] = id
	}
	err = b.step("mkdir volume root")
	if err == nil {
		err = os.Mkdir(dataDir(v), 0o755)
	}
	if err != nil {
		return fmt.Errorf("create volume root: %w", err)
	}
	if v.Info[infoEngine] == EngineFscrypt {
		err := b.step("fscrypt set policy")
		if err == nil {
			err = setPolicy(dataDir(v), v.Info[infoKeyID])
		}
		if err != nil {
			return err
		}
	}
	err = b.step("set owner")
	if err == nil {
		err = volfs.ApplyOwner(dataDir(v), driver.OwnerOf(v.Options, 0o755))
	}
	if err != nil {
		return err
	}
	return b.teardown(ctx, v)
}

// open returns the device holding the volume's filesystem, attaching the
// backing file and, for LUKS, opening the mapping. A mapping or loop device
// that is still there (containers started before holdfast restarted use the
// filesystem on it) is used as it is: mounting it again shares that
// filesystem, where a second device would mount the same image twice. The
// returned func drops this process's hold on the loop device, which then
// lives as long as its user.
func (b *Backend) open(ctx context.Context, v *driver.Volume, key []byte) (string, func(), error) {
	var mapping string
	if v.Info[infoEngine] == EngineLUKS {
		var err error
		if mapping, err = mappingName(v.Name, backingFile(v)); err != nil {
			return "", nil, err
		}
		if dev := mappingDevice(mapping); dev != "" {
			return dev, func() {}, nil
		}
	}
	loop, err := b.attach(v)
	if err != nil {
		return "", nil, err
	}
	closeLoop := func() { loop.Close() }
	if mapping == "" {
		return loop.Path, closeLoop, nil
	}
	dev, err := b.luksOpen(ctx, mapping, loop.Path, key)
	if err != nil {
		closeLoop()
		return "", nil, err
	}
	return dev, closeLoop, nil
}

// attach returns the loop device already attached to the backing file, or
// attaches one.
func (b *Backend) attach(v *driver.Volume) (*loopdev.Device, error) {
	if err := b.step("attach loop device"); err != nil {
		return nil, err
	}
	return loopdev.Acquire(backingFile(v))
}

// mountFS mounts the filesystem on dev at the staging directory.
func (b *Backend) mountFS(dev string, v *driver.Volume) error {
	return loopdev.MountStaging(b.Mounter, b.Faults, dev, v.Options["fs"], v.Dir)
}

// key reads the volume's key from the key directory.
func (b *Backend) key(v *driver.Volume) ([]byte, error) {
	name, ok := v.Options["keyfile"]
	if !ok {
		name = generatedName(v.Name)
	}
	return b.keys().read(name)
}

// Mount unlocks the volume and bind-mounts its root at the mountpoint. On
// error everything it set up is taken down again. A volume without leases
// is first released of what an earlier Unmount that failed left mounted,
// so its filesystem is never mounted twice over.
func (b *Backend) Mount(ctx context.Context, v *driver.Volume) (err error) {
	if len(v.Leases) == 0 {
		if err := b.teardown(ctx, v); err != nil {
			return err
		}
	}
	key, err := b.key(v)
	if err != nil {
		return err
	}
	defer clear(key)
	defer func() {
		if err != nil {
			b.undoMount(ctx, v)
		}
	}()
	dev, closeLoop, err := b.open(ctx, v, key)
	if err != nil {
		return err
	}
	defer closeLoop()
	if err := b.mountFS(dev, v); err != nil {
		return err
	}
	if v.Info[infoEngine] == EngineFscrypt {
		if err := b.unlock(v, key); err != nil {
			return err
		}
	}
	return b.Mounter.Mount(dataDir(v), v.Mountpoint, "", bind, "")
}

// unlock adds the fscrypt key and checks it is the volume's.
func (b *Backend) unlock(v *driver.Volume, key []byte) error {
	id, err := b.addKey(stagingDir(v), key)
	if err != nil {
		return err
	}
	if id != v.Info[infoKeyID] {
		removeKeyAt(stagingDir(v), id)
		return fmt.Errorf("%w: the key file of volume %s is not the key it was created with", errWrongKey, v.Name)
	}
	return nil
}

// undoMount takes down what a failed Mount set up. While containers from
// before a restart may share the filesystem, it only drops holdfast's own
// mount of it: the key and the devices are theirs too.
func (b *Backend) undoMount(ctx context.Context, v *driver.Volume) {
	if len(v.Leases) == 0 {
		b.teardown(ctx, v)
		return
	}
	volfs.UnmountPath(b.Mounter, stagingDir(v))
}

// Unmount removes the bind mount and locks the volume again. A volume
// still busy (a process has its working directory or a file open in it)
// is detached lazily: new users cannot reach it at once, the key is
// removed (fscrypt: files already open stay readable until closed), and
// the kernel releases the filesystem, the mapping (a deferred close) and
// the loop device (autoclear) when the last of those processes lets go.
func (b *Backend) Unmount(ctx context.Context, v *driver.Volume) error {
	if err := volfs.UnmountPath(b.Mounter, v.Mountpoint); err != nil {
		return err
	}
	return b.teardown(ctx, v)
}

// Recover releases what a crash left of an unmounted volume.
func (b *Backend) Recover(ctx context.Context, v *driver.Volume) error {
	return b.teardown(ctx, v)
}

// teardown removes the fscrypt key, unmounts the filesystem, closes the
// LUKS mapping and detaches the loop device, whichever of them exist.
func (b *Backend) teardown(ctx context.Context, v *driver.Volume) error {
	var errs []error
	mounted, err := loopdev.StagingMounted(b.Mounter, v.Dir)
	if err != nil {
		return err
	}
	if mounted {
		if id := v.Info[infoKeyID]; id != "" {
			errs = append(errs, b.removeKey(stagingDir(v), id))
		}
		errs = append(errs, volfs.UnmountPath(b.Mounter, stagingDir(v)))
	}
	if mayUseLUKS(v) {
		name, err := mappingName(v.Name, backingFile(v))
		if err == nil {
			err = b.luksClose(ctx, name)
		} else if errors.Is(err, unix.ENOENT) {
			err = nil // no backing file, no mapping
		}
		errs = append(errs, err)
	}
	errs = append(errs, loopdev.DetachImage(b.Faults, v.Dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lock volume %s: %w", v.Name, err)
	}
	return nil
}

// Remove takes down anything left and destroys a generated key; the driver
// then deletes the volume's directory with the backing file.
func (b *Backend) Remove(ctx context.Context, v *driver.Volume) error {
	if err := b.teardown(ctx, v); err != nil {
		return err
	}
	if generatedKey(v) {
		return b.keys().destroy(v.Name)
	}
	return nil
}

// generatedKey says whether v's key was generated by holdfast. A Create
// cut short by a crash recorded nothing yet: its key, if it got that far,
// was generated unless keyfile was given (names ending in .key are
// reserved for generated keys).
func generatedKey(v *driver.Volume) bool {
	switch v.Info[infoKey] {
	case "generated":
		return true
	case "":
		_, given := v.Options["keyfile"]
		return !given
	}
	return false
}

// mayUseLUKS says whether v may have a LUKS mapping: it does, or a Create
// cut short by a crash had not yet recorded its engine on a host with
// dm-crypt.
func mayUseLUKS(v *driver.Volume) bool {
	switch v.Info[infoEngine] {
	case EngineLUKS:
		return true
	case "":
		return luksAvailable() == nil
	}
	return false
}

// Status reports the engine, cipher, filesystem, size, key source and,
// while mounted, the usage. It never reveals key material.
func (b *Backend) Status(v *driver.Volume) map[string]any {
	st := map[string]any{
		"engine": v.Info[infoEngine],
		"fs":     v.Options["fs"],
		"size":   volfs.Size(v.Options),
		"key":    keyDescription(v),
	}
	switch v.Info[infoEngine] {
	case EngineLUKS:
		st["cipher"] = luksCipher
	case EngineFscrypt:
		st["cipher"] = fscryptCipher
	}
	if v.Mounted {
		maps.Copy(st, volfs.Usage(v.Mountpoint))
	}
	return st
}

// Meter reports the size and, while mounted, what the volume's own
// filesystem holds; while locked its usage is unknown.
func (b *Backend) Meter(v *driver.Volume) driver.Measure {
	m := driver.Measure{Size: volfs.Size(v.Options)}
	if v.Mounted {
		used, ok := volfs.Usage(v.Mountpoint)["used"].(uint64)
		m.Used, m.UsedKnown = int64(used), ok
	}
	return m
}

func keyDescription(v *driver.Volume) string {
	if name, ok := v.Options["keyfile"]; ok {
		return "keyfile " + name
	}
	return "generated " + generatedName(v.Name)
}
