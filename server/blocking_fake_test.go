package server

import (
	"context"

	"github.com/holdfast/holdfast/driver"
)

// blockingBackend is a backend whose Mount waits until release is closed:
// a server that does not answer.
type blockingBackend struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingBackend) Parse(map[string]string) (map[string]string, error) {
	return map[string]string{}, nil
}
func (b *blockingBackend) Create(context.Context, *driver.Volume) error { return nil }
func (b *blockingBackend) Mount(ctx context.Context, _ *driver.Volume) error {
	b.entered <- struct{}{}
	<-b.release
	return nil
}
func (b *blockingBackend) Unmount(context.Context, *driver.Volume) error { return nil }
func (b *blockingBackend) Remove(context.Context, *driver.Volume) error  { return nil }
func (b *blockingBackend) Status(*driver.Volume) map[string]any          { return nil }
func (b *blockingBackend) Meter(*driver.Volume) driver.Measure           { return driver.Measure{} }
