package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/archive"
	"github.com/holdfast/holdfast/internal/volfs"
)

// infoFromCopy is the Info key that keeps how consistent the copy of
// from= was: "exact", or the view's Note (a live copy). Status shows it as
// fromCopy.
const infoFromCopy = "holdfast.fromCopy"

// OptFrom is the Create option that fills a new volume with a copy of
// another volume's files: --opt from=SOURCE.
const OptFrom = "from"

// checkFrom checks from=SOURCE for a new volume of type typ, before the
// source is looked up.
func checkFrom(typ, from string) error {
	if err := ValidateName(from); err != nil {
		return fmt.Errorf("%w from=%q: %v", ErrInvalidOption, from, err)
	}
	switch typ {
	case TypeBind:
		return fmt.Errorf("%w from=%s: a bind volume shows a host directory that already holds its files, and holdfast never writes into it; copy into that directory yourself, or use type=local", ErrInvalidOption, from)
	case "tmpfs":
		return fmt.Errorf("%w from=%s: a tmpfs volume starts empty at every first mount (its files live in memory only while mounted), so it cannot keep a copy; use type=local or type=loop", ErrInvalidOption, from)
	case "nfs":
		return fmt.Errorf("%w from=%s: an nfs volume shows a share that already holds its files, and holdfast never writes into it; copy into the share yourself", ErrInvalidOption, from)
	}
	return nil
}

// requested is the options a Create asks of an existing volume: one
// without from= asks nothing about where the files came from (they were
// copied once, at the first Create), so it matches any.
func requested(opts map[string]string) map[string]string {
	if _, ok := opts[OptFrom]; ok {
		return opts
	}
	out := maps.Clone(opts)
	out[OptFrom] = LeftToDefault
	return out
}

// checkSource checks that a new volume name can be filled from source.
func (d *Driver) checkSource(name, source string) error {
	if source == name {
		return fmt.Errorf("%w from=%s: a volume cannot be made from itself; name another volume", ErrInvalidOption, source)
	}
	if _, err := d.get(source); err != nil {
		return errorf(ErrNotFound, "from=%s: no such volume (docker volume ls lists them; a volume being removed cannot be copied): create it first or name another", source)
	}
	return nil
}

// copyFrom fills new volume v, not yet committed, with its source's
// files: through a view of the source, mounted at v's mountpoint, synced,
// then unmounted. A crash meanwhile leaves v's create intent, and
// start-up removes the half-filled volume.
func (d *Driver) copyFrom(ctx context.Context, b Backend, v *Volume) error {
	source := v.Options[OptFrom]
	view, err := d.OpenView(ctx, source, false)
	if err != nil {
		return fmt.Errorf("from=%s: %w", source, err)
	}
	log := d.cfg.Log.WithField("volume", v.Name).WithField("from", source)
	if view.Note != "" {
		log.Warn("copying " + view.Note)
	}
	if v.Info == nil {
		v.Info = map[string]string{}
	}
	v.Info[infoFromCopy] = cmp.Or(view.Note, "exact")
	err = d.fillNew(ctx, b, v, func(dir string) error { return d.copyTree(ctx, view.Dir, dir, v) })
	if cerr := view.Close(); cerr != nil {
		log.WithError(cerr).Error("the view of the source was not released cleanly")
	}
	if err != nil {
		return fmt.Errorf("from=%s: %w", source, err)
	}
	return nil
}

// fillNew mounts v, being created, calls fn with its mountpoint, syncs
// its filesystem and unmounts it.
func (d *Driver) fillNew(ctx context.Context, b Backend, v *Volume, fn func(dir string) error) error {
	if err := d.mount(ctx, b, v); err != nil {
		return err
	}
	err := fn(v.Mountpoint)
	if err == nil {
		err = d.step("sync copy")
	}
	if err == nil {
		err = syncFS(v.Mountpoint)
	}
	return errors.Join(err, d.unmount(ctx, b, v))
}

// copyTree copies the tree at src into the empty root dst as
// internal/archive streams it (owners, modes, times, links, xattrs,
// special and sparse files), then gives dst the owner and mode options of
// v when they are set.
func (d *Driver) copyTree(ctx context.Context, src, dst string, v *Volume) error {
	if err := d.step("copy files"); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	defer stop()
	wrote := make(chan error, 1)
	go func() {
		_, err := archive.Write(pw, src, archive.WriteOptions{Skip: func(name, reason string) {
			d.cfg.Log.WithField("volume", v.Name).WithField("file", name).Warn("not copied: " + reason)
		}})
		pw.CloseWithError(err)
		wrote <- err
	}()
	_, rerr := archive.Read(pr, dst, archive.ReadOptions{})
	pr.CloseWithError(io.ErrClosedPipe)
	werr := <-wrote
	if rerr != nil {
		if _, sized := v.Options["size"]; sized && errors.Is(rerr, unix.ENOSPC) {
			return fmt.Errorf("copy into the new volume: %w (give it a size= large enough for the source's files)", rerr)
		}
		if werr != nil && !errors.Is(werr, io.ErrClosedPipe) {
			return fmt.Errorf("read the source: %w", werr)
		}
		return fmt.Errorf("copy into the new volume: %w", rerr)
	}
	return d.applyRootOptions(dst, v.Options)
}

// applyRootOptions sets the uid, gid and mode options given at Create on
// the copy's root, which otherwise keeps the source root's.
func (d *Driver) applyRootOptions(dir string, opts map[string]string) error {
	_, uid := opts["uid"]
	_, gid := opts["gid"]
	_, mode := opts["mode"]
	if !uid && !gid && !mode {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	return volfs.ApplyOwner(dir, OwnerOf(opts, st.Mode&0o7777))
}
