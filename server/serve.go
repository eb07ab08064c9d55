package server

import (
	"context"
	"net"
	"net/http"
)

// Serve answers the volume plugin protocol for d on l until ctx is done,
// then stops accepting, waits for the requests in flight and returns.
func Serve(ctx context.Context, l net.Listener, d *Instrumented) error {
	srv := &http.Server{Handler: Handler(d, d.log)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
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
