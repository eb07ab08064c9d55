// Package guest tells tests whether they run inside the qemu guest that
// make vmtest boots, whose kernel has what the host's lacks (device-mapper,
// the NFS client).
package guest

import (
	"os"
	"testing"
)

// Env is the variable vmtest/run.sh sets to 1 in the guest.
const Env = "HOLDFAST_VM"

// Require skips t unless it runs in the guest; lacks names what the host
// kernel does not have, for the skip message.
func Require(t testing.TB, lacks string) {
	t.Helper()
	if os.Getenv(Env) != "1" {
		t.Skip("needs the qemu guest (" + Env + "=1): the host kernel has no " + lacks + "; make vmtest runs this")
	}
}
