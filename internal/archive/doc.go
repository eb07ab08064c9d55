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
//   - A regular file with holes is written in GNU tar's sparse format 1.0
//     (GNU.sparse.major=1, minor=0, name, realsize; the entry's data is
//     the map followed by the file's data segments, found with
//     SEEK_DATA/SEEK_HOLE), which GNU tar, bsdtar and Go's archive/tar
//     unpack as the sparse file it was; a tar that does not know it
//     unpacks the packed data under GNUSparseFile.0/NAME, never under the
//     file's own name. archive/tar cannot write these records, so
//     gnusparse.go writes that entry's headers. The same entry carries
//     HOLDFAST.sparse.realsize=N and HOLDFAST.sparse.map=OFF,LEN,...: the
//     exact segments, which Read uses to leave holes where the file had
//     them. Sparse files in archives of GNU tar's own (formats 0.0, 0.1,
//     1.0 and the old GNU format) are restored with their blocks of zeros
//     left as holes.
//   - A last global header (typeflag 'g') with HOLDFAST.end=ENTRIES and
//     HOLDFAST.sha256=HEX, the SHA-256 of every entry's data in order: a
//     stream cut short on an entry boundary, or with a changed byte in a
//     file's data, is refused rather than restored in part.
//
// Extended attributes are SCHILY.xattr.NAME records, as GNU tar writes them.
// GNU tar warns about the HOLDFAST.* records it does not know and ignores
// them (--warning=no-unknown-keyword quiets it); bsdtar ignores them.
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
