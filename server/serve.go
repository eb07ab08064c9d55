package server

import (
	"context"
	"net"

	"github.com/docker/go-plugins-helpers/volume"
)

// Serve answers the volume plugin protocol for d on l until ctx is done,
// then stops accepting, waits for the requests in flight and returns.
func Serve(ctx context.Context, l net.Listener, d *Instrumented) error {
	h := volume.NewHandler(d)
	errc := make(chan error, 1)
	go func() { errc <- h.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	l.Close()
	<-errc
	d.Drain()
	return nil
}
