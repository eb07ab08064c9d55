// Package e2e holds holdfast's end-to-end tests. They drive the real docker
// CLI against a real dockerd and run every scenario twice: against the
// managed plugin built by plugin/build.sh and against the legacy daemon
// (bin/holdfast on a socket of its own). They are skipped unless
// HOLDFAST_E2E=1; e2e/run.sh (make e2e) prepares the machine and runs them.
package e2e
