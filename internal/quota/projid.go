package quota

import (
	"strconv"
	"strings"
)

// ProjidFile lists the project ids an administrator named (name:id lines).
const ProjidFile = "/etc/projid"

// parseProjid returns the ids of a projid file's text; lines that are not
// name:id are ignored, as xfs_quota does.
func parseProjid(text string) map[uint32]bool {
	ids := map[uint32]bool{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		_, num, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSpace(num), 10, 32)
		if err == nil {
			ids[uint32(id)] = true
		}
	}
	return ids
}
