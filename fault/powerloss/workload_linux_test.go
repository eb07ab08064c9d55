package powerloss

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/loop"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Kinds of request.
const (
	opCreate  = "create"
	opMount   = "mount"
	opUnmount = "unmount"
	opRemove  = "remove"
	opWrite   = "write" // a "container" writes and fsyncs a file in a mounted volume
)

// op is one request of the workload, acknowledged before its mark.
type op struct {
	kind, vol, id string
	opts          map[string]string
	file, data    string // opWrite
	mark          string
}

// paths are where one holdfast keeps everything, on the logged filesystem
// (root, keyDir) or beside it (mountRoot, on the guest's tmpfs).
type paths struct{ root, keyDir, mountRoot string }

func pathsAt(fsMount, mountRoot string) paths {
	return paths{root: filepath.Join(fsMount, "root"), keyDir: filepath.Join(fsMount, "keys"), mountRoot: mountRoot}
}

// newDriver starts holdfast in this process, wired as cmd/holdfast wires
// it (the NFS types aside: the suite has no server on the logged disk).
func newDriver(p paths, boot string) (*driver.Driver, error) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	if err := crypt.CheckKeyDir(p.keyDir, log); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	m := volfs.KernelMounter{}
	return driver.New(driver.Config{
		Root: p.root, MountRoot: p.mountRoot, Scope: "local", BootID: boot, Mounter: m, Log: log,
		Backends: map[string]driver.Backend{
			"local": &local.Backend{Mounter: m},
			"tmpfs": &tmpfs.Backend{Mounter: m, DefaultSize: "8m"},
			"crypt": &crypt.Backend{Mounter: m, KeyDir: p.keyDir},
			"loop":  &loop.Backend{Mounter: m},
		},
	})
}

// volumeTypes are the types the workload creates, with their options.
var volumeTypes = []map[string]string{
	{"type": "local"},
	{"type": "local", "uid": "1000", "gid": "1000", "mode": "0750"},
	{"type": "tmpfs", "size": "4m"},
	{"type": "crypt", "size": "32m"},
	{"type": "loop", "size": "16m"},
}

// plan is a workload: rounds of create, mount, write, unmount and remove
// over every type, interleaved by seed, with at most maxCrypt crypt and
// as many loop volumes alive at a time (their images, allocated in full,
// hold 32 and 16 MiB of the small disk).
func plan(seed uint64, rounds, maxCrypt int) []op {
	rng := rand.New(rand.NewPCG(seed, 12))
	var ops []op
	type live struct {
		name, typ string
		mounted   string // mount ID, or ""
	}
	var alive []*live
	images, n := map[string]int{}, 0
	for r := 0; r < rounds; r++ {
		// Create one of each type (crypt when room), then act on the
		// living at random.
		for _, o := range volumeTypes {
			if imageType(o["type"]) && images[o["type"]] >= maxCrypt {
				continue
			}
			n++
			v := &live{name: fmt.Sprintf("pl-%d-%s", n, o["type"]), typ: o["type"]}
			if imageType(o["type"]) {
				images[o["type"]]++
			}
			ops = append(ops, op{kind: opCreate, vol: v.name, opts: o})
			alive = append(alive, v)
		}
		rng.Shuffle(len(alive), func(i, j int) { alive[i], alive[j] = alive[j], alive[i] })
		var keep []*live
		for i, v := range alive {
			id := fmt.Sprintf("c%d", len(ops))
			ops = append(ops, op{kind: opMount, vol: v.name, id: id})
			if v.typ != "tmpfs" {
				ops = append(ops, op{kind: opWrite, vol: v.name, file: fmt.Sprintf("f%d", len(ops)), data: fmt.Sprintf("written by container %s of %s at op %d\n", id, v.name, len(ops))})
			}
			ops = append(ops, op{kind: opUnmount, vol: v.name, id: id})
			if i%2 == 0 || r == rounds-1 {
				ops = append(ops, op{kind: opRemove, vol: v.name})
				if imageType(v.typ) {
					images[v.typ]--
				}
				continue
			}
			keep = append(keep, v)
		}
		alive = keep
	}
	for i := range ops {
		ops[i].mark = fmt.Sprintf("op-%d", i)
	}
	return ops
}

// imageBytes is the image size of each type in volumeTypes that has one.
var imageBytes = map[string]int64{"crypt": 32 << 20, "loop": 16 << 20}

// imageType tells the types whose storage is an image file allocated in
// full at Create.
func imageType(typ string) bool { return imageBytes[typ] > 0 }

// runOp sends one request to d.
func runOp(d *driver.Driver, o op, mountRoot string) error {
	switch o.kind {
	case opCreate:
		return d.Create(&volume.CreateRequest{Name: o.vol, Options: o.opts})
	case opMount:
		_, err := d.Mount(&volume.MountRequest{Name: o.vol, ID: o.id})
		return err
	case opUnmount:
		return d.Unmount(&volume.UnmountRequest{Name: o.vol, ID: o.id})
	case opRemove:
		return d.Remove(&volume.RemoveRequest{Name: o.vol})
	case opWrite:
		return writeSynced(filepath.Join(mountRoot, o.vol), o.file, o.data)
	}
	return fmt.Errorf("unknown request %q", o.kind)
}

// writeSynced is what a database in a container does: write, fsync the
// file and its directory.
func writeSynced(dir, name, data string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}
