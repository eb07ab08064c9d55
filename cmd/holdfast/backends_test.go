package main

import (
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Every volume type holdfast serves reports to the sampler behind Status's
// figures and the metrics: a new type that forgets Meter would have no
// holdfast_volume_size_bytes.
func TestEveryTypeIsMetered(t *testing.T) {
	c := &config{root: "/r", mountRoot: "/m", keyDir: "/k"}
	bs := backends(c, volfs.NewFakeMounter(), nil, nil, logrus.New())
	for typ, b := range bs {
		if typ == driver.TypeBind {
			// a directory of the host's: its size and usage are not the
			// volume's own, and Status says so
			continue
		}
		_, ok := b.(driver.Meter)
		assert.True(t, ok, "type %s implements driver.Meter", typ)
	}
}
