// Package loopdev is what holdfast's image-backed volume types (crypt and
// loop) share: an image file allocated in full, a filesystem made on it
// without discard, and the loop device that attaches the image while the
// volume is in use (autoclear, found again by the image's identity after a
// restart or a crash, detached when the volume is locked or removed).
package loopdev
