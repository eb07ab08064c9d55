package crypt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/volfs"
)

// KeySize is the size of every volume key: 64 random bytes, the AES-256-XTS
// key size.
const KeySize = 64

// generatedSuffix ends the names of the keys holdfast generates. keyfile
// names may not end with it, so no volume can borrow a key that another
// volume's Remove destroys.
const generatedSuffix = ".key"

var errWrongKey = errors.New("wrong key")

// keyStore is the key directory (--key-dir).
type keyStore struct {
	dir    string
	faults *failpoint.Set
}

// ensure creates the key directory, mode 0700, and checks it is root's
// alone (volfs.CheckPrivateDir; holdfast checks it at start too).
func (k keyStore) ensure() error {
	if err := os.MkdirAll(k.dir, 0o700); err != nil {
		return volfs.NoSpace(fmt.Errorf("create key directory: %w", err), "--key-dir", k.dir)
	}
	_, err := volfs.CheckPrivateDir(k.dir, "--key-dir", nil)
	return err
}

// CheckKeyDir checks an existing key directory at start: root's alone,
// corrected to 0700 (with a warning) when open to others. A missing one is
// created at the first crypt volume's Create.
func CheckKeyDir(dir string, log logrus.FieldLogger) error {
	_, err := volfs.CheckPrivateDir(dir, "--key-dir", log)
	return err
}

// generatedName is the key file holdfast generates for a volume: NAME.key,
// or for a name too long to take the suffix within a file name's 255
// bytes, its first 200 bytes, a hash of the whole name and the suffix.
func generatedName(volume string) string {
	if len(volume)+len(generatedSuffix) <= 255 {
		return volume + generatedSuffix
	}
	sum := sha256.Sum256([]byte(volume))
	return volume[:200] + "-" + hex.EncodeToString(sum[:16]) + generatedSuffix
}

// checkKeyfileName accepts a plain file name inside the key directory.
func checkKeyfileName(name string) (string, error) {
	switch {
	case name == "", name == ".", name == "..", strings.ContainsAny(name, "/\x00"):
		return "", errors.New("a file name inside --key-dir, without any /")
	case strings.HasSuffix(name, generatedSuffix):
		return "", errors.New("names ending in .key are reserved for keys holdfast generates; rename the file, e.g. db.keyfile")
	}
	return name, nil
}

// generate writes a new random key for volume, refusing to overwrite any
// existing file.
func (k keyStore) generate(volume string) error {
	if err := k.faults.Check("write key"); err != nil {
		return err
	}
	if err := k.ensure(); err != nil {
		return err
	}
	path := filepath.Join(k.dir, generatedName(volume))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("key file %s already exists (left by an interrupted create, or another holdfast sharing --key-dir); holdfast never overwrites a key: delete it if no volume uses it", path)
	}
	if err != nil {
		return volfs.NoSpace(fmt.Errorf("create key file: %w", err), "--key-dir", k.dir)
	}
	key := make([]byte, KeySize)
	defer clear(key)
	_, err = rand.Read(key)
	if err == nil {
		_, err = f.Write(key)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = volfs.SyncPath(k.dir)
	}
	if err != nil {
		os.Remove(path)
		return volfs.NoSpace(fmt.Errorf("write key file %s: %w", path, err), "--key-dir", k.dir)
	}
	return nil
}

// read returns the key in file name. Errors say which file and what is
// wrong, never what it holds.
func (k keyStore) read(name string) ([]byte, error) {
	if err := k.faults.Check("read key"); err != nil {
		return nil, err
	}
	path := filepath.Join(k.dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("key file %s is missing: restore it from your key backup", path)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("key file %s is a symlink; holdfast reads keys only from regular files inside --key-dir", path)
	case err != nil:
		return nil, fmt.Errorf("open key file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file", path)
	}
	if fi.Size() != KeySize {
		return nil, fmt.Errorf("key file %s holds %d bytes; a key is exactly %d random bytes (head -c %d /dev/urandom > FILE)", path, fi.Size(), KeySize, KeySize)
	}
	key := make([]byte, KeySize)
	if _, err := io.ReadFull(f, key); err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return key, nil
}

// destroy overwrites the generated key of volume, syncs it and deletes it,
// so that a copy of the backing file can never be decrypted again.
func (k keyStore) destroy(volume string) error {
	path := filepath.Join(k.dir, generatedName(volume))
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy key file %s: %w", path, err)
	}
	junk := make([]byte, KeySize)
	rand.Read(junk)
	err = k.faults.Check("overwrite key")
	if err == nil {
		_, err = f.WriteAt(junk, 0)
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err == nil {
		err = k.faults.Check("delete key")
	}
	if err == nil {
		err = os.Remove(path)
	}
	if err == nil {
		err = volfs.SyncPath(k.dir)
	}
	if err != nil {
		return fmt.Errorf("destroy key file %s: %w", path, err)
	}
	return nil
}
