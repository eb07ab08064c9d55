package main

import (
	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/bind"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/loop"
	"github.com/holdfast/holdfast/driver/nfs"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/metrics"
	"github.com/holdfast/holdfast/internal/usage"
	"github.com/holdfast/holdfast/internal/volfs"
)

// backends builds the backend of every volume type: one line per type.
func backends(c *config, mounter volfs.Mounter, walker *usage.Walker, m *metrics.Metrics, log logrus.FieldLogger) map[string]driver.Backend {
	private := map[string]string{"--root": resolvePath(c.root), "--mount-root": resolvePath(c.mountRoot), "--key-dir": resolvePath(c.keyDir)}
	return map[string]driver.Backend{
		"local":         local.New(mounter, walker),
		"tmpfs":         tmpfs.New(mounter, c.tmpfsSize),
		driver.TypeBind: bind.New(mounter, bindPaths(c.bindPaths), private),
		"crypt":         crypt.New(mounter, c.keyDir),
		"loop":          loop.New(mounter),
		nfs.TypeNFS:     &nfs.Backend{Mounter: mounter, Timeout: c.nfsTimeout, Counters: m, Log: log.WithField("type", nfs.TypeNFS)},
		nfs.TypeNFS4:    &nfs.Backend{Mounter: mounter, Timeout: c.nfsTimeout, Type: nfs.TypeNFS4, Counters: m, Log: log.WithField("type", nfs.TypeNFS4)},
	}
}
