package nfs

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/nfstest"
)

func try(t *testing.T, name, src, data string, limit time.Duration) error {
	mp := filepath.Join(t.TempDir(), "mp")
	os.Mkdir(mp, 0o755)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- unix.Mount(src, mp, "nfs", 0, data) }()
	select {
	case err := <-done:
		t.Logf("%s: src=%q data=%q -> err=%v (%d) in %v", name, src, data, err, errnoOf(err), time.Since(start))
		if err == nil {
			var st unix.Stat_t
			unix.Stat(mp, &st)
			b, _ := os.ReadFile("/proc/self/mountinfo")
			for _, l := range splitLines(string(b)) {
				if contains(l, mp) {
					t.Logf("  mountinfo: %s", l)
				}
			}
			t0 := time.Now()
			e := unix.Unmount(mp, 0)
			t.Logf("  umount: %v in %v", e, time.Since(t0))
		}
		return err
	case <-time.After(limit):
		t.Logf("%s: src=%q data=%q -> still blocked after %v", name, src, data, limit)
		return fmt.Errorf("blocked")
	}
}

func errnoOf(err error) int {
	if e, ok := err.(unix.Errno); ok {
		return int(e)
	}
	return -1
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
func contains(a, b string) bool { return len(b) > 0 && len(a) >= len(b) && (func() bool {
	for i := 0; i+len(b) <= len(a); i++ {
		if a[i:i+len(b)] == b {
			return true
		}
	}
	return false
})() }

func proxy(t *testing.T, network, laddr, target string, gate chan struct{}) string {
	l, err := net.Listen(network, laddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				if gate != nil {
					<-gate
				}
				u, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				go io.Copy(u, c)
				io.Copy(c, u)
				c.Close()
				u.Close()
			}()
		}
	}()
	return l.Addr().String()
}


type silent struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newSilent(t *testing.T) *silent {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silent{Listener: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	return s
}

func (s *silent) cut() {
	s.Listener.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

func TestExplore2(t *testing.T) {
	if os.Getenv("HOLDFAST_VM") == "" {
		t.Skip("vm only")
	}
	for _, vers := range []string{"3", "4.2"} {
		sl := newSilent(t)
		_, sp, _ := net.SplitHostPort(sl.Addr().String())
		mp := filepath.Join(t.TempDir(), "mp")
		os.Mkdir(mp, 0o755)
		done := make(chan error, 1)
		data := "addr=127.0.0.1,vers=" + vers + ",nolock,proto=tcp,port=" + sp + ",mountport=" + sp + ",mountproto=tcp"
		go func() { done <- unix.Mount("127.0.0.1:/", mp, "nfs", 0, data) }()
		time.Sleep(3 * time.Second)
		t0 := time.Now()
		sl.cut()
		select {
		case err := <-done:
			t.Logf("vers=%s silent then cut: %v after %v", vers, err, time.Since(t0))
		case <-time.After(60 * time.Second):
			t.Logf("vers=%s silent then cut: still blocked 60s after cut", vers)
		}
	}
	// late success with dir intact
	dir := t.TempDir()
	s, _ := nfstest.Start(dir)
	defer s.Close()
	gate := make(chan struct{})
	ga := proxy(t, "tcp", "127.0.0.1:0", s.Addr(), gate)
	_, gp, _ := net.SplitHostPort(ga)
	mp := filepath.Join(t.TempDir(), "late")
	os.Mkdir(mp, 0o755)
	done := make(chan error, 1)
	go func() {
		done <- unix.Mount("127.0.0.1:/", mp, "nfs", 0, "addr=127.0.0.1,vers=3,nolock,proto=tcp,port="+gp+",mountport="+gp+",mountproto=tcp")
	}()
	time.Sleep(5 * time.Second)
	close(gate)
	t0 := time.Now()
	select {
	case err := <-done:
		t.Logf("late mount: %v after %v", err, time.Since(t0))
		t.Logf("unmount: %v", unix.Unmount(mp, 0))
	case <-time.After(60 * time.Second):
		t.Logf("late mount still blocked")
	}
	// stale attr + stuck stat, then unmount
	d2 := t.TempDir()
	s2, _ := nfstest.Start(d2)
	mp2 := filepath.Join(t.TempDir(), "mp")
	os.Mkdir(mp2, 0o755)
	P2 := s2.Port
	t.Logf("mount: %v", unix.Mount("127.0.0.1:/", mp2, "nfs", 0, fmt.Sprintf("addr=127.0.0.1,vers=3,nolock,proto=tcp,port=%d,mountport=%d,mountproto=tcp,actimeo=0", P2, P2)))
	os.WriteFile(filepath.Join(mp2, "f"), []byte("x"), 0o644)
	s2.Close()
	stuck := make(chan error, 1)
	go func() { _, err := os.Stat(filepath.Join(mp2, "f")); stuck <- err }()
	time.Sleep(2 * time.Second)
	for _, fl := range []int{0, unix.MNT_FORCE, unix.MNT_DETACH} {
		done := make(chan error, 1)
		t0 := time.Now()
		go func() { done <- unix.Unmount(mp2, fl) }()
		select {
		case err := <-done:
			t.Logf("stuck-stat umount flags=%d: %v in %v", fl, err, time.Since(t0))
		case <-time.After(5 * time.Second):
			t.Logf("stuck-stat umount flags=%d: blocked 5s", fl)
		}
		select {
		case err := <-stuck:
			t.Logf("stat returned: %v", err)
			stuck = nil
		default:
		}
		b, _ := os.ReadFile("/proc/self/mountinfo")
		if !contains(string(b), mp2) {
			t.Logf("gone after flags=%d", fl)
			break
		}
	}
	if stuck != nil {
		select {
		case err := <-stuck:
			t.Logf("stat returned later: %v", err)
		case <-time.After(3 * time.Second):
			t.Logf("stat still stuck")
		}
	}
}
