package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/require"
)

// FuzzDecodeRequest feeds arbitrary endpoints and bodies to the decoder.
// It never panics; a refused body always has a message and one of the
// statuses the decoder documents; an accepted body decodes into a value
// that encodes and decodes again to the same value, and that the sdk's
// lenient decoder reads the same way (unknown fields ignored by both), so
// the driver gets exactly what was checked. Seeds:
// testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		v, _, err := decodeRequest(path, body)
		if err != nil {
			var br *badRequest
			require.ErrorAs(t, err, &br)
			require.NotEmpty(t, br.msg)
			require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge}, br.status)
			require.Nil(t, v)
			return
		}
		enc, err := json.Marshal(v)
		require.NoError(t, err)
		again, _, err := decodeRequest(path, enc)
		require.NoError(t, err, "re-encoded as %s", enc)
		require.Equal(t, v, again, "re-encoded as %s", enc)
		if lenient := sdkRead(t, path, body); lenient != nil {
			require.Equal(t, v, lenient, "the sdk reads %q differently", body)
		}
	})
}

// sdkRead decodes body as the sdk's handler does, with Go's lenient
// decoder; nil for the endpoints without a body.
func sdkRead(t *testing.T, path string, body []byte) any {
	targets := map[string]any{
		"/VolumeDriver.Create":  &volume.CreateRequest{},
		"/VolumeDriver.Remove":  &volume.RemoveRequest{},
		"/VolumeDriver.Path":    &volume.PathRequest{},
		"/VolumeDriver.Get":     &volume.GetRequest{},
		"/VolumeDriver.Mount":   &volume.MountRequest{},
		"/VolumeDriver.Unmount": &volume.UnmountRequest{},
	}
	target, ok := targets[path]
	if !ok {
		return nil
	}
	require.NoError(t, json.Unmarshal(body, target))
	if c, ok := target.(*volume.CreateRequest); ok && len(c.Options) == 0 {
		c.Options = nil // the decoder's one form of "no options"
	}
	return target
}

func TestSDKReadCoversEveryEndpointWithABody(t *testing.T) {
	for path, ep := range endpoints {
		if len(ep.fields) > 0 {
			require.NotNil(t, sdkRead(t, path, []byte("{}")), path)
		}
	}
	require.True(t, slices.Contains(endpoints["/VolumeDriver.Create"].fields, "Opts"))
}
