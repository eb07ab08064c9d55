package driver

import "github.com/holdfast/holdfast/internal/volfs"

// RealBackends returns the real local and tmpfs backends on m (tmpfs
// volumes defaulting to 64 MiB), for the core's tests of what volumes do.
// Those backends import this package, which its own test files cannot
// import: realbackends_test.go, in the external test package, sets
// RealBackends when the test binary starts.
var RealBackends func(m volfs.Mounter) map[string]Backend
