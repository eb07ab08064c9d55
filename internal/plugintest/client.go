// Package plugintest talks to a running holdfast over its socket the way
// dockerd does, for tests.
package plugintest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ContentType is what dockerd sends with every plugin request.
const ContentType = "application/vnd.docker.plugins.v1.2+json"

// Client calls a volume plugin on a Unix socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client for the plugin listening on sock.
func NewClient(sock string) *Client {
	return &Client{http: &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
		},
		Timeout: 2 * time.Minute,
	}}
}

// Call posts req as JSON to the endpoint (e.g. "VolumeDriver.Mount") and
// decodes the answer into resp, which may be nil. An {"Err": ...} answer
// is returned as an error with that message.
func (c *Client) Call(endpoint string, req, resp any) error {
	status, raw, err := c.Post(endpoint, req)
	if err != nil {
		return err
	}
	var e struct{ Err string }
	if json.Unmarshal(raw, &e) == nil && e.Err != "" {
		return errors.New(e.Err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", endpoint, status, raw)
	}
	if resp == nil {
		return nil
	}
	return json.Unmarshal(raw, resp)
}

// Post posts req as JSON to the endpoint and returns the answer's status
// and body, undecoded.
func (c *Client) Post(endpoint string, req any) (int, []byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, nil, err
	}
	hreq, err := http.NewRequest(http.MethodPost, "http://plugin/"+endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	hreq.Header.Set("Content-Type", ContentType)
	res, err := c.http.Do(hreq)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", endpoint, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", endpoint, err)
	}
	return res.StatusCode, raw, nil
}

// WaitReady waits until the plugin answers Plugin.Activate.
func (c *Client) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.Call("Plugin.Activate", struct{}{}, nil)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
