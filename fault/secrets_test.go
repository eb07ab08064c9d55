package fault

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// secret is one piece of key material: the raw bytes of a key.
type secret struct {
	label string // where it came from, e.g. the key file's name
	raw   []byte
}

// form is one way key material can be written down.
type form struct {
	name string
	enc  func([]byte) []byte
}

// forms are the encodings a leak can take: raw bytes, hex in both cases,
// base64 (standard and URL alphabets; the unpadded form is a prefix of the
// padded one), fmt's %v of a []byte ("12 201 7 ..."), Go's %q and a JSON
// string (lossy but deterministic).
var forms = []form{
	{"raw", func(b []byte) []byte { return b }},
	{"hex", func(b []byte) []byte { return []byte(hex.EncodeToString(b)) }},
	{"HEX", func(b []byte) []byte { return []byte(strings.ToUpper(hex.EncodeToString(b))) }},
	{"base64", func(b []byte) []byte { return []byte(base64.RawStdEncoding.EncodeToString(b)) }},
	{"base64url", func(b []byte) []byte { return []byte(base64.RawURLEncoding.EncodeToString(b)) }},
	{"decimal", func(b []byte) []byte { return []byte(strings.Trim(fmt.Sprint(b), "[]")) }},
	{"go-quoted", func(b []byte) []byte {
		q := strconv.Quote(string(b))
		return []byte(q[1 : len(q)-1])
	}},
	{"json-string", func(b []byte) []byte {
		j, _ := json.Marshal(string(b))
		return j[1 : len(j)-1]
	}},
}

// window is the length of the prefix the scanner indexes needles by; every
// needle is at least this long.
const window = 16

// needle is one encoded part of a secret.
type needle struct {
	what string // e.g. `c0.key (hex, bytes 0-32)`
	data []byte
}

// needles returns every form of the whole secret and of each half, so a
// partial leak is found too.
func needles(s secret) []needle {
	type part struct {
		name string
		b    []byte
	}
	parts := []part{{"whole", s.raw}}
	if h := len(s.raw) / 2; h >= window {
		parts = append(parts, part{fmt.Sprintf("bytes 0-%d", h), s.raw[:h]}, part{fmt.Sprintf("bytes %d-%d", h, len(s.raw)), s.raw[h:]})
	}
	var out []needle
	for _, p := range parts {
		for _, f := range forms {
			if d := f.enc(p.b); len(d) >= window {
				out = append(out, needle{what: fmt.Sprintf("%s (%s, %s)", s.label, f.name, p.name), data: d})
			}
		}
	}
	return out
}

// scanner finds needles in a haystack with one pass over it: needles are
// indexed by their first window bytes.
type scanner struct {
	index map[string][]needle
}

func newScanner(secrets []secret) *scanner {
	s := &scanner{index: map[string][]needle{}}
	for _, sec := range secrets {
		for _, n := range needles(sec) {
			k := string(n.data[:window])
			s.index[k] = append(s.index[k], n)
		}
	}
	return s
}

// scan returns what it found in hay, each finding once, sorted.
func (s *scanner) scan(hay []byte) []string {
	if len(s.index) == 0 {
		return nil
	}
	found := map[string]bool{}
	for i := 0; i+window <= len(hay); i++ {
		cands, ok := s.index[string(hay[i:i+window])]
		if !ok {
			continue
		}
		for _, n := range cands {
			if bytes.HasPrefix(hay[i:], n.data) {
				found[fmt.Sprintf("%s at offset %d", n.what, i)] = true
			}
		}
	}
	out := make([]string, 0, len(found))
	for f := range found {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// scanBytes looks for every form of secrets in hay.
func scanBytes(hay []byte, secrets []secret) []string {
	return newScanner(secrets).scan(hay)
}

// scanFile looks for every form of secrets in the file at path.
func scanFile(path string, secrets []secret) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return scanBytes(b, secrets), nil
}

// randomKey returns 64 random bytes, the size of a holdfast key.
func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 64)
	if _, err := crand.Read(k); err != nil {
		t.Fatalf("random key: %v", err)
	}
	return k
}

// TestScannerFindsPlantedKeys proves the scanner can fail: a key planted
// in any form, whole or by half, at any place in a sample is found, and a
// sample without it (even holding another key) gives nothing.
func TestScannerFindsPlantedKeys(t *testing.T) {
	key := secret{label: "planted", raw: randomKey(t)}
	other := randomKey(t)
	noise := func() []byte {
		b := make([]byte, 3000)
		crand.Read(b)
		return append(b, []byte(hex.EncodeToString(other)+base64.StdEncoding.EncodeToString(other)+fmt.Sprint(other))...)
	}
	parts := map[string][]byte{"whole": key.raw, "bytes 0-32": key.raw[:32], "bytes 32-64": key.raw[32:]}
	for _, f := range forms {
		for pname, part := range parts {
			enc := f.enc(part)
			for _, where := range []string{"start", "middle", "end"} {
				t.Run(f.name+"/"+pname+"/"+where, func(t *testing.T) {
					var sample []byte
					switch where {
					case "start":
						sample = append(slices.Clone(enc), noise()...)
					case "middle":
						sample = slices.Concat(noise(), enc, noise())
					case "end":
						sample = append(noise(), enc...)
					}
					want := fmt.Sprintf("planted (%s, %s)", f.name, pname)
					hits := scanBytes(sample, []secret{key})
					assert.True(t, slices.ContainsFunc(hits, func(h string) bool { return strings.HasPrefix(h, want) }),
						"want %q among %v", want, hits)
				})
			}
		}
	}
	t.Run("absent", func(t *testing.T) {
		assert.Empty(t, scanBytes(noise(), []secret{key}))
	})
	t.Run("in a file, JSON-logged as logrus would", func(t *testing.T) {
		line, err := json.Marshal(map[string]any{"msg": "request ok", "blob": key.raw})
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "log")
		require.NoError(t, os.WriteFile(path, append(noise(), line...), 0o600))
		hits, err := scanFile(path, []secret{key})
		require.NoError(t, err)
		assert.NotEmpty(t, hits, "a []byte field is logged as base64")
	})
}

// procSampler records the distinct argv and environments of every process
// in /proc, sampled in a tight loop until stopped.
type procSampler struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples map[string]string // content -> "pid N cmdline"
	sweeps  int
}

func startSampler() *procSampler {
	s := &procSampler{stop: make(chan struct{}), done: make(chan struct{}), samples: map[string]string{}}
	go s.run()
	return s
}

func (s *procSampler) run() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		s.sweep()
	}
}

// sweep reads every process's cmdline and environ once.
func (s *procSampler) sweep() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		for _, file := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile(filepath.Join("/proc", pid, file))
			if err != nil || len(b) == 0 {
				continue
			}
			s.mu.Lock()
			if _, ok := s.samples[string(b)]; !ok {
				s.samples[string(b)] = "pid " + pid + " " + file
			}
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.sweeps++
	s.mu.Unlock()
}

// halt stops sampling.
func (s *procSampler) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// saw reports whether some sampled argv contains the word.
func (s *procSampler) saw(word string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for content, where := range s.samples {
		if strings.HasSuffix(where, "cmdline") && strings.Contains(content, word) {
			return true
		}
	}
	return false
}

// scan looks for secrets in every sample.
func (s *procSampler) scan(secrets []secret) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := newScanner(secrets)
	var out []string
	for content, where := range s.samples {
		for _, h := range sc.scan([]byte(content)) {
			out = append(out, where+": "+h)
		}
	}
	return out
}

// secretsRun is the evidence TestSecretsNeverLeak gathers.
type secretsRun struct {
	t       *testing.T
	p       *plugin
	answers [][]byte // Get answers and error messages, as received
}

// note records a Get answer or an error message for the scan.
func (r *secretsRun) note(v any) {
	switch v := v.(type) {
	case error:
		r.answers = append(r.answers, []byte(v.Error()))
	default:
		b, err := json.Marshal(v)
		require.NoError(r.t, err)
		r.answers = append(r.answers, b)
	}
}

// get records and returns a Get answer.
func (r *secretsRun) get(name string) {
	v, err := r.p.get(name)
	require.NoError(r.t, err, "get %s", name)
	r.note(v)
}

// TestSecretsNeverLeak (R5) runs crypt volumes with generated keys and with
// a keyfile of its own, through mounts, a SIGKILL restart, a wrong key and
// refused key options, while a sampler reads every process's argv and
// environment. Then no key (raw, hex, base64, decimal, quoted, by halves)
// may appear in those samples, in the plugin's logs (debug level), in its
// state database, in Get answers or in errors. The sampler is shown to
// work: it must see mkfs run and find a decoy key put in a process's argv
// and environment.
func TestSecretsNeverLeak(t *testing.T) {
	requireRoot(t)
	requireCrypt(t)
	p := newPlugin(t, "--log-level", "debug")
	r := &secretsRun{t: t, p: p}
	require.NoError(t, os.MkdirAll(p.keyDir, 0o700))
	own := randomKey(t)
	require.NoError(t, os.WriteFile(filepath.Join(p.keyDir, "own.keyfile"), own, 0o600))
	p.keys.add("own.keyfile", own)
	p.start()

	sampler := startSampler()
	defer sampler.halt()
	decoy := randomKey(t)
	stopDecoy := runDecoy(t, decoy)

	gen, mine, churn := volPrefix+"s-gen", volPrefix+"s-own", volPrefix+"s-churn"
	p.mustCreate(gen, map[string]string{"type": "crypt", "size": "32m"})
	p.noteKeyFile(gen + ".key")
	p.mustCreate(mine, map[string]string{"type": "crypt", "size": "32m", "keyfile": "own.keyfile"})
	r.createUntilMkfsSeen(sampler, churn)

	r.useVolumes(gen, mine)
	r.wrongKey(mine, own)
	r.refusedKeyOptions()

	for _, name := range []string{gen, mine} {
		p.mustRemove(name)
	}
	stopDecoy()
	sampler.halt()
	r.checkSampler(sampler, decoy)
	r.scanEverything(sampler)
}

// runDecoy runs a process with decoy in its argv (hex) and environment
// (base64) until the returned func is called.
func runDecoy(t *testing.T, decoy []byte) func() {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "sh", "-c", "sleep 600", hex.EncodeToString(decoy))
	cmd.Env = append(os.Environ(), "HOLDFAST_FAULT_DECOY="+base64.StdEncoding.EncodeToString(decoy))
	require.NoError(t, cmd.Start())
	return func() {
		cancel()
		cmd.Wait()
	}
}

// createUntilMkfsSeen creates and removes a crypt volume until the sampler
// has seen mkfs run (at least 3 times, at most 60), noting each key.
func (r *secretsRun) createUntilMkfsSeen(s *procSampler, name string) {
	for i := 0; i < 60 && (i < 3 || !s.saw("mkfs")); i++ {
		r.p.mustCreate(name, map[string]string{"type": "crypt", "size": "32m"})
		r.p.noteKeyFile(name + ".key")
		mp := r.p.mustMount(name, "churn")
		require.NoError(r.t, os.WriteFile(filepath.Join(mp, "f"), []byte("data"), 0o600))
		r.get(name)
		r.p.mustUnmount(name, "churn")
		r.p.mustRemove(name)
	}
}

// useVolumes mounts both volumes twice, writes to them, kills and
// restarts the plugin, and unmounts them, recording Get answers.
func (r *secretsRun) useVolumes(names ...string) {
	for _, name := range names {
		for _, id := range []string{"a", "b"} {
			mp := r.p.mustMount(name, volPrefix+id)
			require.NoError(r.t, os.WriteFile(filepath.Join(mp, id), []byte("secret data"), 0o600))
		}
		r.get(name)
	}
	r.p.restart()
	for _, name := range names {
		r.get(name)
		r.p.mustUnmount(name, volPrefix+"a")
		r.p.mustUnmount(name, volPrefix+"b")
		r.get(name)
	}
}

// wrongKey replaces the keyfile of name with another key, checks that the
// Mount fails saying so, and puts the right key back.
func (r *secretsRun) wrongKey(name string, right []byte) {
	path := filepath.Join(r.p.keyDir, "own.keyfile")
	wrong := randomKey(r.t)
	r.p.keys.add("wrong.keyfile", wrong)
	require.NoError(r.t, os.WriteFile(path, wrong, 0o600))
	_, err := r.p.mount(name, "w")
	require.ErrorContains(r.t, err, "wrong key")
	r.note(err)
	require.NoError(r.t, os.WriteFile(path, right, 0o600))
	r.p.mustMount(name, "w")
	r.get(name)
	r.p.mustUnmount(name, "w")
}

// refusedKeyOptions passes a key in options that must be refused.
func (r *secretsRun) refusedKeyOptions() {
	k := randomKey(r.t)
	r.p.keys.add("option-key", k)
	for opt, val := range map[string]string{
		"passphrase": hex.EncodeToString(k),
		"key":        base64.StdEncoding.EncodeToString(k),
		"Secret":     fmt.Sprint(k),
	} {
		err := r.p.create(volPrefix+"s-opt", map[string]string{"type": "crypt", "size": "32m", opt: val})
		require.ErrorContains(r.t, err, "key material never goes in an option", "option %s", opt)
		r.note(err)
	}
}

// checkSampler proves the sampler works: it saw mkfs and found the decoy
// in argv and environment.
func (r *secretsRun) checkSampler(s *procSampler, decoy []byte) {
	assert.True(r.t, s.saw("mkfs"), "the /proc sampler never saw mkfs run (%d sweeps)", s.sweeps)
	hits := s.scan([]secret{{label: "decoy", raw: decoy}})
	assert.True(r.t, slices.ContainsFunc(hits, func(h string) bool { return strings.Contains(h, "cmdline: decoy (hex") }),
		"decoy in argv not found: %v", hits)
	assert.True(r.t, slices.ContainsFunc(hits, func(h string) bool { return strings.Contains(h, "environ: decoy (base64") }),
		"decoy in environment not found: %v", hits)
	r.t.Logf("sampler: %d sweeps of /proc, %d distinct argv and environments", s.sweeps, len(s.samples))
}

// scanEverything scans samples, answers, logs and database for the keys.
func (r *secretsRun) scanEverything(s *procSampler) {
	secrets := r.p.keys.all()
	require.GreaterOrEqual(r.t, len(secrets), 7, "keys collected: own, wrong, option, generated ones")
	for _, h := range s.scan(secrets) {
		r.t.Errorf("key material in a process's argv or environment: %s", h)
	}
	for _, a := range r.answers {
		for _, h := range scanBytes(a, secrets) {
			r.t.Errorf("key material in a plugin answer %q: %s", a, h)
		}
	}
	files := append(slices.Clone(r.p.logs), filepath.Join(r.p.root, "holdfast.db"))
	var logBytes int64
	for _, f := range files {
		fi, err := os.Stat(f)
		require.NoError(r.t, err)
		logBytes += fi.Size()
		hits, err := scanFile(f, secrets)
		require.NoError(r.t, err)
		for _, h := range hits {
			r.t.Errorf("key material in %s: %s", f, h)
		}
	}
	require.Greater(r.t, logBytes, int64(10000), "logs and database hold something to scan")
	r.t.Logf("scanned %d keys in %d answers, %d files (%d bytes)", len(secrets), len(r.answers), len(files), logBytes)
}
