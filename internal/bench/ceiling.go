package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ceilings measures what the machine allows, printed beside the data
// path: the kernel's AES-256-XTS (the cipher both crypt engines use),
// memory copy bandwidth and the raw disk write rate under dir. diskBytes
// is the amount written with O_DIRECT and through the cipher.
func Ceilings(bin, dir string, diskBytes int64, d time.Duration) ([]Row, error) {
	rows, err := cipherRow(bin, filepath.Join(dir, "ram"), diskBytes, d)
	if err != nil {
		return nil, err
	}
	copyRate := memcpy(d)
	disk, err := diskWrite(filepath.Join(dir, "direct.img"), diskBytes)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	return append(rows,
		Row{ID: "C", Name: "memory copy, one core", Value: copyRate, Unit: "MiB/s"},
		Row{ID: "C", Name: "raw disk write (O_DIRECT, 1 MiB blocks, fsync)", Value: disk, Unit: "MiB/s"},
	), nil
}

// cipherRow measures AES-256-XTS in the kernel, through AF_ALG where the
// kernel has it, and otherwise as the write and read rates of a crypt
// volume whose --root is on a tmpfs: with no disk below, they are bound
// by the kernel's cipher (the one fscrypt and dm-crypt use).
func cipherRow(bin, dir string, size int64, d time.Duration) ([]Row, error) {
	note := "kernel driver " + xtsDriver()
	rate, err := kernelXTS(d)
	if err == nil {
		return []Row{{ID: "C", Name: "AES-256-XTS encrypt, kernel, one core", Value: rate, Unit: "MiB/s", Note: note}}, nil
	}
	if !errors.Is(err, unix.EAFNOSUPPORT) {
		return nil, fmt.Errorf("AES-256-XTS through AF_ALG: %w", err)
	}
	w, r, err := cryptOnRAM(bin, dir, size)
	if err != nil {
		return nil, fmt.Errorf("crypt volume on RAM: %w", err)
	}
	note += "; this kernel has no AF_ALG, so the cipher is measured through a crypt volume on RAM"
	return []Row{
		{ID: "C", Name: "AES-256-XTS bound: crypt volume on RAM, seq write", Value: w, Unit: "MiB/s", Note: note},
		{ID: "C", Name: "AES-256-XTS bound: crypt volume on RAM, seq read", Value: r, Unit: "MiB/s"},
	}, nil
}

// cryptOnRAM writes then reads size bytes on a crypt volume of a holdfast
// whose --root is a tmpfs.
func cryptOnRAM(bin, dir string, size int64) (write, read float64, err error) {
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return 0, 0, err
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, fmt.Sprintf("size=%d", 2*size+256<<20)); err != nil {
		return 0, 0, fmt.Errorf("mount tmpfs: %w", err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	var rows []Row
	rows, err = withPlugin(bin, dir, "", func(p *Plugin) ([]Row, error) {
		t := volumeTarget(p, "ram", map[string]string{"type": "crypt", "size": fmt.Sprint(size + 128<<20)})
		mp, done, err := t.setup()
		if err != nil {
			return nil, err
		}
		seq := filepath.Join(mp, "seq")
		w, err := seqWrite(seq, size)
		var r time.Duration
		if err == nil {
			r, err = seqRead(seq)
		}
		if err == nil {
			err = os.Remove(seq)
		}
		if derr := done(); err == nil {
			err = derr
		}
		mib := float64(size) / (1 << 20)
		return []Row{{Value: mib / w.Seconds()}, {Value: mib / r.Seconds()}}, err
	})
	if err != nil {
		return 0, 0, err
	}
	return rows[0].Value, rows[1].Value, nil
}

// kernelXTS encrypts 64 KiB messages through AF_ALG for about d.
func kernelXTS(d time.Duration) (float64, error) {
	fd, err := unix.Socket(unix.AF_ALG, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrALG{Type: "skcipher", Name: "xts(aes)"}); err != nil {
		return 0, err
	}
	key := make([]byte, 64) // AES-256-XTS: two 256-bit keys
	for i := range key {
		key[i] = byte(i*37 + 1)
	}
	if err := unix.SetsockoptString(fd, unix.SOL_ALG, unix.ALG_SET_KEY, string(key)); err != nil {
		return 0, err
	}
	op, _, err := unix.Accept(fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(op)
	buf, out := make([]byte, 64<<10), make([]byte, 64<<10)
	oob := algControl()
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		if err := unix.Sendmsg(op, buf, oob, nil, 0); err != nil {
			return 0, err
		}
		m, err := unix.Read(op, out)
		if err != nil {
			return 0, err
		}
		n += int64(m)
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds(), nil
}

// algControl is the control message of one AF_ALG encryption: the
// operation and a 16-byte IV.
func algControl() []byte {
	op := make([]byte, 4)
	binary.NativeEndian.PutUint32(op, unix.ALG_OP_ENCRYPT)
	iv := make([]byte, 4+16)
	binary.NativeEndian.PutUint32(iv, 16)
	return append(cmsg(unix.ALG_SET_OP, op), cmsg(unix.ALG_SET_IV, iv)...)
}

func cmsg(typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_ALG, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// xtsDriver names the kernel's xts(aes) implementation of highest priority.
func xtsDriver() string {
	f, err := os.Open("/proc/crypto")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	best, bestPrio, name, driver := "unknown", -1, "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "name":
			name = v
		case "driver":
			driver = v
		case "priority":
			var prio int
			fmt.Sscan(v, &prio)
			if name == "xts(aes)" && prio > bestPrio {
				best, bestPrio = driver, prio
			}
		}
	}
	return best
}

// memcpy copies a 64 MiB buffer for about d.
func memcpy(d time.Duration) float64 {
	src, dst := make([]byte, 64<<20), make([]byte, 64<<20)
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		n += int64(copy(dst, src))
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds()
}

// diskWrite writes size bytes with O_DIRECT in 1 MiB blocks and fsyncs.
func diskWrite(path string, size int64) (float64, error) {
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(buf)
	copy(buf, block())
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(size) / (1 << 20) / time.Since(start).Seconds(), nil
}
