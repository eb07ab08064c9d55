package bench

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRowsLines(t *testing.T) {
	hf, base := abba([]float64{0.9, 0.91, 0.92, 0.9, 0.9, 0.9}, 1.1)
	rows := []Row{PairedAtLeast("DB-guest", "luks", hf, base, "TPS", 0.97)}
	var out strings.Builder
	out.WriteString("=== RUN   TestGuestPGBench\n    log line\n")
	require.NoError(t, WriteRowsLine(&out, rows))
	out.WriteString("--- PASS: TestGuestPGBench (1.00s)\n")
	got, err := ReadRowsLines(strings.NewReader(out.String()))
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, rows[0].Samples, got[0].Samples)
	assert.Equal(t, Missed, got[0].Verdict)

	r := &Report{Rows: []Row{{ID: "B1", Name: "x"}, {ID: "DB-guest", Name: "luks", Value: 1}}}
	r.Merge(got)
	r.Merge(got)
	require.Len(t, r.Rows, 2, "a merged row replaces the one of the same id and measure")
	assert.Equal(t, got[0], r.Rows[1])

	_, err = ReadRowsLines(strings.NewReader(RowsPrefix + "{not json\n"))
	assert.ErrorContains(t, err, "rows line")
}
