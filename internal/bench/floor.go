package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/docker/go-plugins-helpers/volume"
)

// Floor is the least a durable volume plugin can do, for B2 to measure
// holdfast against: go-plugins-helpers' handler, an in-memory map, and
// each change appended to a log file with one fdatasync before the
// answer. It keeps no directories, intents or mount table checks.
type Floor struct {
	dir string
	l   net.Listener
	log *os.File
	srv chan error

	mu   sync.Mutex
	vols map[string]bool
}

// StartFloor serves the floor plugin on the legacy socket sock, with its
// log and mountpoints in dir.
func StartFloor(dir, sock string) (*Floor, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(filepath.Join(dir, "floor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		log.Close()
		return nil, err
	}
	f := &Floor{dir: dir, l: l, log: log, srv: make(chan error, 1), vols: map[string]bool{}}
	go func() { f.srv <- volume.NewHandler(f).Serve(l) }()
	return f, nil
}

// Stop closes the socket and the log.
func (f *Floor) Stop() error {
	f.l.Close()
	<-f.srv
	return f.log.Close()
}

// change records one change durably: one write, one fdatasync.
func (f *Floor) change(op, name string) error {
	b, _ := json.Marshal(map[string]string{"op": op, "name": name})
	if _, err := f.log.Write(append(b, '\n')); err != nil {
		return err
	}
	return f.log.Sync()
}

func (f *Floor) Create(r *volume.CreateRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vols[r.Name] {
		return nil
	}
	if err := f.change("create", r.Name); err != nil {
		return err
	}
	f.vols[r.Name] = true
	return nil
}

func (f *Floor) Remove(r *volume.RemoveRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.vols[r.Name] {
		return fmt.Errorf("no such volume: %s", r.Name)
	}
	if err := f.change("remove", r.Name); err != nil {
		return err
	}
	delete(f.vols, r.Name)
	return nil
}

func (f *Floor) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.vols[r.Name] {
		return nil, fmt.Errorf("no such volume: %s", r.Name)
	}
	return &volume.GetResponse{Volume: &volume.Volume{Name: r.Name}}, nil
}

func (f *Floor) List() (*volume.ListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := &volume.ListResponse{}
	for name := range f.vols {
		res.Volumes = append(res.Volumes, &volume.Volume{Name: name})
	}
	return res, nil
}

func (f *Floor) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	return &volume.PathResponse{}, nil
}

func (f *Floor) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	if _, err := f.Get(&volume.GetRequest{Name: r.Name}); err != nil {
		return nil, err
	}
	mp := filepath.Join(f.dir, "mounts", r.Name)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: mp}, f.change("mount", r.Name)
}

func (f *Floor) Unmount(r *volume.UnmountRequest) error {
	if _, err := f.Get(&volume.GetRequest{Name: r.Name}); err != nil {
		return err
	}
	return f.change("unmount", r.Name)
}

func (f *Floor) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}
