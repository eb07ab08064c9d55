package server

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/holdfast/holdfast/internal/admin"
)

// closeGrace bounds how long Serve waits, once the driver is drained, for
// handlers to write their answers.
const closeGrace = 5 * time.Second

// Serve answers the volume plugin protocol (and the admin protocol, when
// d has one: see Admin) for d on l until ctx is done, then stops
// accepting, waits for the requests in flight, lets their answers be
// written, closes the connections dockerd keeps open and returns.
func Serve(ctx context.Context, l net.Listener, d *Instrumented) error {
	srv := &http.Server{Handler: d.routes(), ConnContext: admin.ConnContext}
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
	// Drain returns once the driver is done, before the handlers have
	// written the answers: without this a Mount that took its lease could
	// lose its answer at exit, and kept-alive connections would still be
	// served by a driver about to be closed.
	sctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		srv.Close()
	}
	return nil
}
