// Package archive writes a directory tree as a PAX tar stream and unpacks
// such a stream into an empty directory, exactly: owners, modes (setuid,
// setgid and sticky bits included), modification and access times, symlinks,
// hard links, extended attributes, fifos, device nodes and sparse files.
//
// # Format
//
// The stream is POSIX.1-2001 (PAX) tar as archive/tar writes it, readable by
// GNU tar and bsdtar, with these records of holdfast's own:
//
//   - HOLDFAST.version=1 on the first entry (the root directory, "./"): the
//     stream was written by this package, so its end marker is required.
//   - HOLDFAST.sparse.realsize=N and HOLDFAST.sparse.map=OFF,LEN,OFF,LEN...
//     on a regular file with holes: the entry's data is the file's data
//     segments (found with SEEK_DATA/SEEK_HOLE) back to back, LEN bytes of
//     each written at OFF, the rest of the N bytes are holes. archive/tar
//     cannot write GNU's sparse records, so these are ours; another tar
//     sees a file holding the segments packed together.
//   - A last global header (typeflag 'g') with HOLDFAST.end=ENTRIES and
//     HOLDFAST.sha256=HEX, the SHA-256 of every entry's data in order: a
//     stream cut short on an entry boundary, or with a changed byte in a
//     file's data, is refused rather than restored in part.
//
// Extended attributes are SCHILY.xattr.NAME records, as GNU tar writes them.
//
// # Reading hostile input
//
// Read refuses absolute names, names with "..", names reaching through a
// symlink (every path is resolved beneath the target with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), hard links to anything not unpacked
// before them, relative symlinks whose target climbs out of the tree,
// duplicate entries, truncated or corrupt streams and absurd sizes. It
// unpacks into a staging directory inside the target and moves the entries
// into place only when the whole stream was good, so on any error the target
// is left as it was. Absolute symlinks are kept: they are never followed
// while unpacking, and mean a path inside the container using the volume.
package archive
