package quota

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCandidatesStayInRange(t *testing.T) {
	for _, key := range []string{"", "a", "pgdata", "a-much-longer-volume-name_0123456789"} {
		ids := candidates(key, 64)
		seen := map[uint32]bool{}
		for _, id := range ids {
			assert.True(t, Owned(id), "id %d of %q outside the range", id, key)
			assert.False(t, seen[id], "id %d of %q repeated", id, key)
			seen[id] = true
		}
	}
	assert.Equal(t, candidates("x", 4), candidates("x", 4), "the same name starts at the same id")
}

func TestSequenceWraps(t *testing.T) {
	last := FirstID + IDCount - 1
	assert.Equal(t, []uint32{last - 1, last, FirstID, FirstID + 1}, sequence(last-1, 4))
}

func TestOwned(t *testing.T) {
	tests := []struct {
		id   uint32
		want bool
	}{
		{0, false}, {FirstID - 1, false}, {FirstID, true},
		{FirstID + IDCount - 1, true}, {FirstID + IDCount, false}, {^uint32(0), false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Owned(tt.id), "id %d", tt.id)
	}
}

func TestParseProjid(t *testing.T) {
	in := "# comment\nlogs:42\n\nweb:2000000005\nbad line\nneg:-1\nbig:99999999999\n"
	got := parseProjid(in)
	assert.Equal(t, map[uint32]bool{42: true, 2000000005: true}, got)
}

func TestQuotaFree(t *testing.T) {
	assert.True(t, Quota{}.Free())
	assert.False(t, Quota{Limit: 1}.Free())
	assert.False(t, Quota{Used: 4096}.Free())
	assert.False(t, Quota{Inodes: 1}.Free(), "a directory holds the id even when empty")
}
