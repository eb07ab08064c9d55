package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"syscall"
)

// Client talks the admin protocol to a holdfast daemon over its socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client of the daemon listening on socket.
func NewClient(socket string) *Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	return &Client{Socket: socket, http: &http.Client{Transport: &http.Transport{DialContext: dial, DisableCompression: true}}}
}

func (c *Client) url(path string, q url.Values) string {
	return (&url.URL{Scheme: "http", Host: "holdfast", Path: path, RawQuery: q.Encode()}).String()
}

// do sends a request and returns the response when it succeeded, the
// daemon's message as the error otherwise.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if errors.Is(err, syscall.EACCES) {
		return nil, fmt.Errorf("reach the holdfast daemon at %s: %w: holdfast admin commands are for root only: run them with sudo", c.Socket, syscall.EACCES)
	}
	if err != nil {
		return nil, fmt.Errorf("reach the holdfast daemon at %s (is it running? give its socket with --socket or HOLDFAST_SOCKET): %w", c.Socket, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var e errBody
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) != nil || e.Err == "" {
		return nil, fmt.Errorf("holdfast daemon at %s answered %s to %s: is it a holdfast that has admin commands?", c.Socket, resp.Status, path)
	}
	return nil, errors.New(e.Err)
}

func (c *Client) getJSON(ctx context.Context, method, path string, q url.Values, out any) error {
	resp, err := c.do(ctx, method, path, q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the answer to %s: %w", path, err)
	}
	return nil
}

// Volumes lists the daemon's volumes.
func (c *Client) Volumes(ctx context.Context) ([]Volume, error) {
	var v []Volume
	return v, c.getJSON(ctx, http.MethodGet, PathList, nil, &v)
}

// Leases lists the leases on name.
func (c *Client) Leases(ctx context.Context, name string) ([]Lease, error) {
	var l []Lease
	return l, c.getJSON(ctx, http.MethodGet, PathLeases, url.Values{"name": {name}}, &l)
}

// Release drops lease id on name and returns what that did.
func (c *Client) Release(ctx context.Context, name, id string) (string, error) {
	var r map[string]string
	err := c.getJSON(ctx, http.MethodPost, PathRelease, url.Values{"name": {name}, "id": {id}}, &r)
	return r["result"], err
}

// Backup copies the backup stream of name to w and returns the daemon's
// note on its consistency; an error the daemon met mid-stream is returned
// once the stream ends, so w then holds a stream that must not be used.
func (c *Client) Backup(ctx context.Context, name string, freeze bool, w io.Writer) (string, error) {
	q := url.Values{"name": {name}}
	if freeze {
		q.Set("freeze", "1")
	}
	resp, err := c.do(ctx, http.MethodGet, PathBackup, q, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return "", fmt.Errorf("backup of %s: %w", name, err)
	}
	if msg := resp.Trailer.Get(trailerErr); msg != "" {
		return "", fmt.Errorf("backup of %s failed on the daemon's side, the stream is incomplete: %s", name, msg)
	}
	return resp.Trailer.Get(trailerNote), nil
}

// Restore creates name with opts and unpacks the stream r into it.
func (c *Client) Restore(ctx context.Context, name string, opts map[string]string, r io.Reader) (Restored, error) {
	q := url.Values{"name": {name}}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Add("opt", k+"="+opts[k])
	}
	var res Restored
	resp, err := c.do(ctx, http.MethodPost, PathRestore, q, r)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("read the answer to the restore of %s: %w", name, err)
	}
	return res, nil
}
