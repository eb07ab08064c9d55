package crypt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fscryptKeySize is the master key size: AES-256-XTS needs 64 bytes.
const fscryptKeySize = 64

// fscryptAvailable reports what this kernel lacks for ext4 encryption.
func fscryptAvailable() error {
	if _, err := os.Stat("/sys/fs/ext4/features/encryption"); err != nil {
		return errors.New("this kernel's ext4 has no encryption support (CONFIG_FS_ENCRYPTION)")
	}
	return nil
}

// addKey is addKeyAt as a step.
func (b *Backend) addKey(mnt string, key []byte) (string, error) {
	if err := b.step("fscrypt add key"); err != nil {
		return "", err
	}
	return addKeyAt(mnt, key)
}

// removeKey is removeKeyAt as a step.
func (b *Backend) removeKey(mnt, id string) error {
	if err := b.step("fscrypt remove key"); err != nil {
		return err
	}
	return removeKeyAt(mnt, id)
}

// addKeyAt adds key to the filesystem mounted at mnt and returns its key
// identifier (hex), which is derived from the key and not secret.
func addKeyAt(mnt string, key []byte) (string, error) {
	if len(key) != fscryptKeySize {
		return "", fmt.Errorf("fscrypt key must be %d bytes", fscryptKeySize)
	}
	// struct fscrypt_add_key_arg is followed by the raw key.
	hdr := int(unsafe.Sizeof(unix.FscryptAddKeyArg{}))
	buf := make([]byte, hdr+len(key))
	defer clear(buf)
	arg := (*unix.FscryptAddKeyArg)(unsafe.Pointer(&buf[0]))
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	arg.Raw_size = uint32(len(key))
	copy(buf[hdr:], key)
	err := ioctlAt(mnt, unix.FS_IOC_ADD_ENCRYPTION_KEY, unsafe.Pointer(&buf[0]))
	if errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("add fscrypt key: %w (the kernel lacks a crypto algorithm fscrypt needs: load the hmac, sha512, xts, cts and aes modules)", err)
	}
	if err != nil {
		return "", fmt.Errorf("add fscrypt key: %w", err)
	}
	return hex.EncodeToString(arg.Key_spec.U[:unix.FSCRYPT_KEY_IDENTIFIER_SIZE]), nil
}

// removeKeyAt removes the key with identifier id from the filesystem at
// mnt, locking its files. A key that is not there is fine. Files still open
// (FILES_BUSY) keep their own keys until they are closed, which is the
// kernel's to do: the key itself is gone, so that is not an error.
func removeKeyAt(mnt, id string) error {
	raw, err := decodeKeyID(id)
	if err != nil {
		return err
	}
	var arg unix.FscryptRemoveKeyArg
	arg.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	copy(arg.Key_spec.U[:], raw[:])
	err = ioctlAt(mnt, unix.FS_IOC_REMOVE_ENCRYPTION_KEY, unsafe.Pointer(&arg))
	if errors.Is(err, unix.ENOKEY) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove fscrypt key: %w", err)
	}
	return nil
}

// setPolicy encrypts the empty directory dir with a v2 policy: AES-256-XTS
// for contents, AES-256-CTS for names, under the key with identifier id.
func setPolicy(dir, id string) error {
	raw, err := decodeKeyID(id)
	if err != nil {
		return err
	}
	p := unix.FscryptPolicyV2{
		Version:                   unix.FSCRYPT_POLICY_V2,
		Contents_encryption_mode:  unix.FSCRYPT_MODE_AES_256_XTS,
		Filenames_encryption_mode: unix.FSCRYPT_MODE_AES_256_CTS,
		Flags:                     unix.FSCRYPT_POLICY_FLAGS_PAD_32,
	}
	p.Master_key_identifier = raw
	if err := ioctlAt(dir, unix.FS_IOC_SET_ENCRYPTION_POLICY, unsafe.Pointer(&p)); err != nil {
		return fmt.Errorf("set fscrypt policy on %s: %w", dir, err)
	}
	return nil
}

// decodeKeyID parses a key identifier as addKey returns it.
func decodeKeyID(id string) (raw [unix.FSCRYPT_KEY_IDENTIFIER_SIZE]byte, err error) {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != len(raw) {
		return raw, fmt.Errorf("bad key identifier %q", id)
	}
	copy(raw[:], b)
	return raw, nil
}

// ioctlAt issues an ioctl with a pointer argument on the file at path.
func ioctlAt(path string, req uint, arg unsafe.Pointer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}
