// Package volfs holds what holdfast's volume types share about files and
// mounts: the Mounter (the kernel's mount table, a fake and a failing one
// for tests), unmounting, owner and mode, usage, full-filesystem errors,
// root-only directories and fsync.
package volfs
