// Package powerloss is the power-cut suite, run in the qemu guest (make
// vmtest): holdfast's --root and --key-dir sit on ext4 or xfs over the
// kernel's dm-log-writes target while a workload of Create, Mount, Unmount
// and Remove runs over every type the guest has, with a log mark after
// each acknowledged request. Then, for every flush and FUA in the log, the
// log is replayed up to that point onto a fresh image (internal/logwrites),
// which is mounted, checked with fsck and served by a holdfast started on
// it, and the state is held to every request acknowledged before the cut.
package powerloss
