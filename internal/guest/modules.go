package guest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Run runs a command in the guest and returns its combined output in the
// error.
func Run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Mounted reports whether dir is a mount point in this mount namespace.
func Mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// LoadModules loads the modules listed in the file list, one .ko path a
// line in load order as vmtest/nfsd.sh and vmtest/docker.sh write it,
// skipping those loaded already.
func LoadModules(list string) error {
	b, err := os.ReadFile(list)
	if err != nil {
		return err
	}
	for _, ko := range strings.Fields(string(b)) {
		name := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(ko), ".ko"), "-", "_")
		if _, err := os.Stat("/sys/module/" + name); err == nil {
			continue
		}
		if err := Run("insmod", ko); err != nil {
			return err
		}
	}
	return nil
}
