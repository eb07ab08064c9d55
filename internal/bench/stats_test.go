package bench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCoverage(t *testing.T) {
	// [min, max] of n samples misses the median with probability 2/2^n.
	assert.InDelta(t, 0.9375, coverage(5, 1), 1e-12)
	assert.InDelta(t, 0.96875, coverage(6, 1), 1e-12)
	// n = 10, k = 2: 1 - 2·(1 + 10)/1024.
	assert.InDelta(t, 1-22.0/1024, coverage(10, 2), 1e-12)
	assert.Equal(t, 252.0, binom(10, 5))
	assert.Equal(t, 1.0, binom(7, 0))
}

func TestMedianCI(t *testing.T) {
	// Below 6 samples the interval is the range, at its own level.
	iv := MedianCI([]float64{1.02, 0.98, 1.00, 0.99, 1.01})
	assert.Equal(t, Interval{Median: 1.00, Low: 0.98, High: 1.02, Level: 0.9375, N: 5}, iv)

	iv = MedianCI([]float64{4, 1, 3, 2, 6, 5})
	assert.Equal(t, 3.5, iv.Median)
	assert.Equal(t, [2]float64{1, 6}, [2]float64{iv.Low, iv.High})
	assert.InDelta(t, 0.96875, iv.Level, 1e-12)

	// 20 samples: k = 6 is the largest with coverage >= 95% (0.9586;
	// k = 7 gives 0.8847), so [x(6), x(15)].
	x := make([]float64, 20)
	for i := range x {
		x[i] = float64(20 - i)
	}
	iv = MedianCI(x)
	assert.Equal(t, 10.5, iv.Median)
	assert.Equal(t, [2]float64{6, 15}, [2]float64{iv.Low, iv.High})
	assert.GreaterOrEqual(t, iv.Level, Confidence)
	assert.Less(t, coverage(20, 7), Confidence)
	assert.Equal(t, []float64{20, 19}, x[:2], "the samples are not sorted in place")

	assert.True(t, math.IsNaN(MedianCI(nil).Median))
}

func TestVerdicts(t *testing.T) {
	iv := Interval{Median: 1, Low: 0.98, High: 1.03}
	assert.False(t, iv.Wide())
	assert.Equal(t, Met, iv.VerdictAtLeast(0.97))
	assert.Equal(t, Missed, iv.VerdictAtLeast(0.99), "the median meets 0.99, the lower bound does not")
	assert.Equal(t, Met, iv.VerdictAtMost(1.03))
	assert.Equal(t, Missed, iv.VerdictAtMost(1.01))
	assert.True(t, iv.Contains(1))
	assert.False(t, iv.Contains(0.9))

	wide := Interval{Median: 1, Low: 0.95, High: 1.01}
	assert.True(t, wide.Wide(), "4% is measured on either side of the median")
	assert.Equal(t, Unsteady, wide.VerdictAtLeast(0.5), "too wide to decide, even far above the target")
	assert.True(t, Interval{Median: 0.2, Low: 0.2, High: 0.209}.Wide(), "relative to the median")
}

func TestPairedRow(t *testing.T) {
	hf := []float64{90, 100, 110, 95, 105, 100}
	base := []float64{100, 100, 100, 100, 100, 100}
	row := pairedAtLeast(pairedRow("B4", "x", hf, base, "MiB/s"), 0.97)
	assert.Equal(t, 1.0, *row.Ratio)
	assert.Equal(t, 100.0, row.Value)
	assert.Equal(t, [2]float64{0.9, 1.1}, [2]float64{row.CILow, row.CIHigh})
	assert.Equal(t, 6, row.N)
	assert.Equal(t, Unsteady, row.Verdict)
	assert.False(t, *row.Met, "unstable is not met")
	_, warn := checkNull(row)
	assert.False(t, warn)

	off := pairedRow("B4", "y", []float64{80, 81, 82, 83, 84, 85}, base, "MiB/s")
	w, warn := checkNull(off)
	require.True(t, warn)
	assert.Equal(t, "W", w.ID)

	b, err := json.Marshal(row)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"id", "measure", "ratio", "ci_low", "ci_high", "n", "samples", "verdict"} {
		assert.Contains(t, m, k)
	}
	assert.Len(t, m["samples"].(map[string]any)["ratios"], 6)

	r := &Report{}
	r.Add(row, pairedAtLeast(pairedRow("B4", "z", []float64{99, 100, 101, 100, 100, 100}, base, "MiB/s"), 0.97))
	var out strings.Builder
	require.NoError(t, r.WriteTable(&out))
	assert.Contains(t, out.String(), "1.000 [0.900, 1.100]  ratio >= 0.97  UNSTABLE")
	assert.Contains(t, out.String(), "1.000 [0.990, 1.010]  ratio >= 0.97  yes")
}

func TestWriteChart(t *testing.T) {
	base := []float64{100, 100, 100, 100, 100, 100}
	r := &Report{}
	r.Add(pairedAtLeast(pairedRow("B4", "met", []float64{99, 100, 101, 100, 100, 100}, base, "MiB/s"), 0.97),
		pairedAtLeast(pairedRow("B4", "missed", []float64{20, 21, 22, 21, 21, 21}, base, "MiB/s"), 0.8),
		pairedAtLeast(pairedRow("B4", "unstable", []float64{80, 100, 120, 100, 100, 100}, base, "MiB/s"), 0.97),
		Row{ID: "B1", Name: "not paired", Value: 1})
	for _, ext := range []string{"svg", "png"} {
		path := filepath.Join(t.TempDir(), "c."+ext)
		require.NoError(t, r.WriteChart(path))
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Greater(t, len(b), 1000, ext)
	}
	path := filepath.Join(t.TempDir(), "none.svg")
	require.NoError(t, (&Report{}).WriteChart(path))
	assert.NoFileExists(t, path)
}
