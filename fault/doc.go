// Package fault holds holdfast's fault suites: tests that run the real
// holdfast binary as root, with real mounts, loop devices and fscrypt, and
// attack it with crashes, concurrency and secret scanning. It has no code
// of its own; everything is in its _test.go files.
//
// The suites (issue 6):
//
//   - R1, crash consistency (crash_test.go): several clients issue random
//     Create, Mount, Unmount and Remove requests on local, tmpfs, loop and
//     crypt volumes while the plugin is killed with SIGKILL at a random moment and
//     restarted on the same state, round after round. A model tracks what
//     each acknowledged request did; a request in flight at the kill may
//     have happened or not, and the model takes what the restarted plugin
//     reports. After every restart the suite checks the model against List,
//     Get and the kernel: acknowledged Creates exist and Removes are gone,
//     the lease counts are exact, nothing is mounted that has no lease and
//     nothing twice, no loop device or device-mapper mapping is left, no
//     file under --root or --key-dir belongs to no volume. A deterministic
//     test also kills the plugin while a crypt Create runs mkfs.
//   - R2, concurrency (concurrency_test.go): 64 clients mount and unmount
//     one volume with distinct mount IDs, and create one volume with the
//     same or with different options, for every volume type this host runs.
//   - R5, secrets (secrets_test.go): no key material (the raw bytes of
//     every key file and their hex, base64, decimal and Go-quoted forms,
//     whole or by halves) appears in the plugin's logs, the state database,
//     Get's Status, errors, or any process's argv or environment, sampled
//     from /proc while crypt volumes are created and mounted. The scanner
//     is tested itself with planted keys. Every plugin the suites start is
//     scanned this way when its test ends, so R1 and R2 are covered too.
//   - Permissions (perms_test.go): as uid and gid 65534 with no groups
//     (setpriv), nothing under --root, --mount-root or --key-dir can be
//     listed, entered, stat'ed below or read, for every volume type, mounted
//     and unmounted, in the default layout and with --mount-root outside
//     --root, and the socket refuses to connect; each probe is shown to work
//     as root and on a world-readable tree. At start, directories open to
//     others are set to 0700 and directories of another user are refused.
//
// The tests need root (they skip, saying so, otherwise); crypt volumes need
// ext4 encryption or dm-crypt, and are left out, with a log line, where the
// host has neither. TestMain builds the binary once with
// `go build ./cmd/holdfast`; set HOLDFAST_FAULT_BIN to test a binary built
// elsewhere instead.
//
// Short run (the default, part of `make test`; about 15 s on 2 cores):
//
//	go test -race -count=1 ./fault
//
// Long run (2000 crash rounds instead of 200; a few minutes):
//
//	HOLDFAST_SOAK=1 go test -race -count=1 -timeout 60m -v -run Crash ./fault
//
// HOLDFAST_FAULT_ROUNDS sets the number of crash rounds outright. Each crash
// run logs its seed; HOLDFAST_FAULT_SEED=N replays the same choices of
// operations, volumes and kill delays (the interleaving of the clients
// still depends on the scheduler). A failing test removes its volumes,
// mounts and loop devices before it ends; with HOLDFAST_FAULT_KEEP=1 it
// keeps the plugin's logs and state directory and says where.
package fault
