// Package driver implements holdfast's Docker volume driver: what every
// volume shares, whatever its type. It validates names and typed options
// (translating Docker's local-driver forms), keeps the persistent state
// (the database and the intent files in each volume's directory), counts
// mount-ID leases, reconciles the state with the kernel at start-up, and
// dispatches to one Backend per volume type. The backends are packages of
// their own beside this one (local, tmpfs, bind, loop, crypt, nfs); the
// mount, ownership, usage and space helpers they share are in
// internal/volfs.
//
// Glossary: each verb below means one thing, in this package and in the
// backends.
//
//   - create: make a new volume: the request Create, the backend's Create
//     and the steps between them (create, makeVolumeDir).
//   - mount, unmount: make the volume available at its mountpoint, and
//     stop; the first lease mounts, the last unmounts.
//   - release: take down what a volume without leases holds in the kernel
//     (its mount, or what a failed unmount left: loop devices, mappings,
//     keys) and keep its data: release, releaseForRemove. A backend's own
//     release is its teardown.
//   - recover: release what a crash left of a volume that is not mounted
//     (Recoverer.Recover), at start-up and before a Remove.
//   - remove: delete a volume for good: the request Remove and its steps
//     (removeVolume: the backend's storage, then the record, then the
//     directory; removeStorage: the same without a record; removeMountpoint).
//   - mark: rename or write the intent file that says where a volume is
//     in its life (markCreated, markRemoving, markCreateUndone).
//   - resume: complete, later, a request that was interrupted by a crash
//     or by a step that failed: resume at start-up, resumeRemove at a
//     Create or Remove of the name. An interrupted Create is resumed by
//     removing what it made; an interrupted Remove by completing it.
//   - trash: move a volume's directory into --root/trash in one rename,
//     so that a Remove never waits for a million files to be deleted.
//   - purge: delete what is in the trash, in the background (purge,
//     WaitPurged).
//   - clear: make a volume directory's place free of what an earlier
//     process left there: an empty directory is deleted, one holding an
//     intent is resumed, anything else is refused and left in place
//     (clearLeftover at Create, clearUnowned at start-up).
//   - drop: forget a record, an entry or an intent file without touching
//     the volume's storage (drop, dropCreateIntent, dropFile).
//   - adopt: take over at start-up, in the same boot, a volume still
//     mounted.
package driver
