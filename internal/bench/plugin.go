package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast/holdfast/internal/plugintest"
)

// Plugin is a holdfast process started for a benchmark, with its state in
// Dir. It logs at the default level to Dir/holdfast.log, as in production.
type Plugin struct {
	Bin    string
	Dir    string
	Socket string
	Client *plugintest.Client

	args []string
	cmd  *exec.Cmd
	log  *os.File
}

// StartPlugin starts bin with its root, mount root and key directory in dir
// and the socket at sock ("" for dir/holdfast.sock).
func StartPlugin(bin, dir, sock string) (*Plugin, error) {
	if sock == "" {
		sock = filepath.Join(dir, "holdfast.sock")
	}
	p := &Plugin{Bin: bin, Dir: dir, Socket: sock, Client: plugintest.NewClient(sock)}
	p.args = []string{
		"--root", filepath.Join(dir, "root"),
		"--mount-root", filepath.Join(dir, "mounts"),
		"--key-dir", filepath.Join(dir, "keys"),
		"--socket", sock,
	}
	if _, err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// Start starts the process and returns the time from exec until the
// socket answers Plugin.Activate.
func (p *Plugin) Start() (time.Duration, error) {
	log, err := os.OpenFile(filepath.Join(p.Dir, "holdfast.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	p.log = log
	p.cmd = exec.Command(p.Bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return 0, fmt.Errorf("start %s: %w", p.Bin, err)
	}
	for {
		if err := p.Client.Call("Plugin.Activate", struct{}{}, nil); err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > 30*time.Second {
			p.Kill()
			return 0, fmt.Errorf("holdfast did not answer on %s within 30 s; see %s", p.Socket, log.Name())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// Kill stops the process with SIGKILL, as a crash would.
func (p *Plugin) Kill() error { return p.stop(syscall.SIGKILL) }

// Stop stops the process with SIGTERM; mounted volumes stay mounted.
func (p *Plugin) Stop() error { return p.stop(syscall.SIGTERM) }

func (p *Plugin) stop(sig syscall.Signal) error {
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(sig)
	p.cmd.Wait()
	p.cmd = nil
	return p.log.Close()
}

// RSS returns the resident set size of the process in bytes.
func (p *Plugin) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
}

// Create creates a volume.
func (p *Plugin) Create(name string, opts map[string]string) error {
	return p.Client.Call("VolumeDriver.Create", map[string]any{"Name": name, "Opts": opts}, nil)
}

// Mount mounts a volume for id and returns its mountpoint.
func (p *Plugin) Mount(name, id string) (string, error) {
	var res struct{ Mountpoint string }
	err := p.Client.Call("VolumeDriver.Mount", map[string]string{"Name": name, "ID": id}, &res)
	return res.Mountpoint, err
}

// Unmount releases id's lease.
func (p *Plugin) Unmount(name, id string) error {
	return p.Client.Call("VolumeDriver.Unmount", map[string]string{"Name": name, "ID": id}, nil)
}

// Remove removes a volume.
func (p *Plugin) Remove(name string) error {
	return p.Client.Call("VolumeDriver.Remove", map[string]string{"Name": name}, nil)
}
