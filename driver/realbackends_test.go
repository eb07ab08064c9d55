package driver_test

import (
	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
)

func init() {
	driver.RealBackends = func(m volfs.Mounter) map[string]driver.Backend {
		return map[string]driver.Backend{"local": local.New(m, nil), "tmpfs": tmpfs.New(m, "64m")}
	}
}
