package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// cmdTimeout bounds every docker command: dockerd itself gives a plugin up to
// 2 minutes for Create and Mount.
const cmdTimeout = 3 * time.Minute

// cmdError is a failed command with what it printed.
type cmdError struct {
	args   []string
	code   int
	stderr string
	stdout string
}

func (e *cmdError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if msg == "" {
		msg = strings.TrimSpace(e.stdout)
	}
	return fmt.Sprintf("`%s` failed (exit %d): %s", strings.Join(e.args, " "), e.code, msg)
}

// run runs a command and returns its trimmed stdout; a failure's error
// carries the exit code and stderr.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	out := strings.TrimSpace(so.String())
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() == context.DeadlineExceeded {
			se.WriteString(fmt.Sprintf("\n(killed after %s)", cmdTimeout))
		} else if ctx.Err() != nil {
			se.WriteString("\n(killed: " + ctx.Err().Error() + ")")
		}
		return out, &cmdError{args: append([]string{name}, args...), code: code, stderr: se.String(), stdout: so.String()}
	}
	return out, nil
}

// dockerE runs docker ARGS, logging the command.
func dockerE(t testing.TB, args ...string) (string, error) {
	t.Helper()
	start := time.Now()
	out, err := run(context.Background(), nil, "docker", args...)
	d := time.Since(start)
	if err != nil {
		t.Logf("$ docker %s  # %s, failed", strings.Join(args, " "), d.Round(time.Millisecond))
	} else {
		t.Logf("$ docker %s  # %s", strings.Join(args, " "), d.Round(time.Millisecond))
	}
	return out, err
}

// docker runs docker ARGS and fails the test if it fails.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerE(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dockerFails runs docker ARGS, fails the test if it succeeds, and returns
// the error text.
func dockerFails(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerE(t, args...)
	if err == nil {
		t.Fatalf("`docker %s` succeeded, want failure; it printed %q", strings.Join(args, " "), out)
	}
	return err.Error()
}

// eventually retries f until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// volumeStatus returns the driver's Status map of a volume.
func volumeStatus(t testing.TB, vol string) map[string]any {
	t.Helper()
	out := docker(t, "volume", "inspect", "--format", "{{json .Status}}", vol)
	var st map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber() // sizes as 8388608, not 8.388608e+06
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("volume %s: Status %q is not a JSON object: %v", vol, out, err)
	}
	return st
}

// statusValue renders one Status field as text ("" when absent), so that
// 1, "1", true and "true" compare alike.
func statusValue(st map[string]any, k string) string {
	v, ok := st[k]
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// wantStatus waits until the volume's Status has each key=value given.
func wantStatus(t testing.TB, vol string, kv ...string) {
	t.Helper()
	eventually(t, 10*time.Second, "volume "+vol+" Status "+strings.Join(kv, " "), func() error {
		st := volumeStatus(t, vol)
		for i := 0; i+1 < len(kv); i += 2 {
			if got := statusValue(st, kv[i]); got != kv[i+1] {
				return fmt.Errorf("%s=%q, want %q (Status %v)", kv[i], got, kv[i+1], st)
			}
		}
		return nil
	})
}

// volumeExists reports whether dockerd knows the volume.
func volumeExists(t testing.TB, vol string) bool {
	t.Helper()
	_, err := dockerE(t, "volume", "inspect", vol)
	return err == nil
}

// volumeNames lists `docker volume ls -q` with the given filters.
func volumeNames(t testing.TB, filters ...string) []string {
	t.Helper()
	args := []string{"volume", "ls", "-q"}
	for _, f := range filters {
		args = append(args, "--filter", f)
	}
	return strings.Fields(docker(t, args...))
}

// mountsUnder lists the host's mount points strictly below dir.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if strings.HasPrefix(mp, prefix) {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
