package bench

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFio(t *testing.T) {
	out := []byte(`note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "seq write 1M, end fsync",
      "error" : 0,
      "read" : {"io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0},
      "write" : {"io_bytes" : 268435456, "bw_bytes" : 786432000, "iops" : 750.0}
    }
  ]
}`)
	j, err := parseFio(out)
	require.NoError(t, err)
	assert.Equal(t, 750.0, fioMeasures(1<<20, 0)[0].rate(j))
	assert.Equal(t, 750.0, fioMeasures(1<<20, 0)[1].rate(j))

	_, err = parseFio([]byte(`{"jobs": [{"jobname": "x", "error": 28}]}`))
	assert.ErrorContains(t, err, "no space left on device")
	_, err = parseFio([]byte(`{"jobs": []}`))
	assert.Error(t, err)
	_, err = parseFio([]byte(`fio: pid=1, err=2/file:filesetup.c`))
	assert.Error(t, err)
}

func TestParseTPS(t *testing.T) {
	tps, err := parseTPS([]byte("latency average = 4.1 ms\ninitial connection time = 9.5 ms\ntps = 971.326813 (without initial connection time)\n"))
	require.NoError(t, err)
	assert.Equal(t, 971.326813, tps)
	_, err = parseTPS([]byte("pgbench: error: connection failed"))
	assert.Error(t, err)
}
