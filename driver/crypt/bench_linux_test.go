package crypt

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/loopdev"
)

// benchEngine is the engine the benchmarks use: LUKS in the guest,
// fscrypt on a host without dm-crypt.
func benchEngine() string {
	if luksAvailable() == nil {
		return EngineLUKS
	}
	return EngineFscrypt
}

const (
	benchSize  = 128 << 20
	benchBytes = 64 << 20
)

// BenchmarkSequential writes then reads 64 MiB in 1 MiB blocks (fsync at
// the end of the write; unmount and mount between write and read so the
// read comes from the device) on a crypt volume and on a plain ext4 loop
// file of the same size, side by side in the same run. It reports both
// throughputs and their ratio, crypt/plain.
func BenchmarkSequential(b *testing.B) {
	r := newRig(b)
	eng := benchEngine()
	require.NoError(b, r.api.Create(&volume.CreateRequest{Name: "bench", Options: map[string]string{"type": "crypt", "size": fmt.Sprint(benchSize), "engine": eng}}))
	plain := newPlainLoop(b, benchSize)
	var cw, cr, pw, pr time.Duration
	id := 0
	for b.Loop() {
		id++
		mount := func() string { return r.mount("bench", fmt.Sprint(id)) }
		unmount := func() { r.unmount("bench", fmt.Sprint(id)) }
		w, rd := measure(b, mount, unmount)
		cw, cr = cw+w, cr+rd
		w, rd = measure(b, plain.mount, plain.unmount)
		pw, pr = pw+w, pr+rd
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * benchBytes / (1 << 20) / d.Seconds() }
	b.ReportMetric(mbps(cw), eng+"-write-MB/s")
	b.ReportMetric(mbps(pw), "plain-write-MB/s")
	b.ReportMetric(mbps(cr), eng+"-read-MB/s")
	b.ReportMetric(mbps(pr), "plain-read-MB/s")
	b.ReportMetric(pw.Seconds()/cw.Seconds(), "write-ratio")
	b.ReportMetric(pr.Seconds()/cr.Seconds(), "read-ratio")
}

// BenchmarkMount times a crypt volume's Mount request, from the request to
// a usable mountpoint, including key read, loop attach, unlock and mount.
func BenchmarkMount(b *testing.B) {
	r := newRig(b)
	eng := benchEngine()
	require.NoError(b, r.api.Create(&volume.CreateRequest{Name: "mnt", Options: map[string]string{"type": "crypt", "size": "64m", "engine": eng}}))
	var total time.Duration
	id := 0
	for b.Loop() {
		id++
		start := time.Now()
		mp := r.mount("mnt", fmt.Sprint(id))
		f, err := os.Create(filepath.Join(mp, "probe"))
		require.NoError(b, err)
		f.Close()
		total += time.Since(start)
		b.StopTimer()
		r.unmount("mnt", fmt.Sprint(id))
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), eng+"-mount-ms")
}

// measure writes and reads benchBytes through the mountpoint mount gives.
func measure(b *testing.B, mount func() string, unmount func()) (write, read time.Duration) {
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	mp := mount()
	path := filepath.Join(mp, "seq")
	start := time.Now()
	f, err := os.Create(path)
	require.NoError(b, err)
	for n := 0; n < benchBytes; n += len(block) {
		_, err := f.Write(block)
		require.NoError(b, err)
	}
	require.NoError(b, f.Sync())
	require.NoError(b, f.Close())
	write = time.Since(start)
	unmount()
	mp = mount()
	start = time.Now()
	f, err = os.Open(filepath.Join(mp, "seq"))
	require.NoError(b, err)
	for {
		_, err := f.Read(block)
		if err == io.EOF {
			break
		}
		require.NoError(b, err)
	}
	f.Close()
	read = time.Since(start)
	require.NoError(b, os.Remove(filepath.Join(mp, "seq")))
	unmount()
	return write, read
}

// plainLoop is an unencrypted ext4 on a loop file: the baseline.
type plainLoop struct {
	b         *testing.B
	file, mnt string
}

func newPlainLoop(b *testing.B, size int64) *plainLoop {
	dir := b.TempDir()
	p := &plainLoop{b: b, file: filepath.Join(dir, "plain.img"), mnt: filepath.Join(dir, "mnt")}
	require.NoError(b, loopdev.AllocateImage(p.file, size))
	require.NoError(b, loopdev.Mkfs(b.Context(), p.file, loopdev.FSExt4))
	require.NoError(b, os.Mkdir(p.mnt, 0o755))
	return p
}

func (p *plainLoop) mount() string {
	loop, err := loopdev.Attach(p.file)
	require.NoError(p.b, err)
	defer loop.Close()
	require.NoError(p.b, unix.Mount(loop.Path, p.mnt, "ext4", nodevNosuid, ""))
	return p.mnt
}

func (p *plainLoop) unmount() { require.NoError(p.b, unix.Unmount(p.mnt, 0)) }
