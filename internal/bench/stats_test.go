package bench

import (
	"encoding/json"
	"math"
	"math/rand/v2"
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

// abba lays rounds out as pairs in ABBA order: each round's ratio r is
// two pairs, the first with holdfast run first, the second with the
// baseline first, and a run going second is order times faster.
func abba(rounds []float64, order float64) (hf, base []float64) {
	for _, r := range rounds {
		hf = append(hf, 100*r, 100*r*order)
		base = append(base, 100*order, 100)
	}
	return hf, base
}

func TestABBARounds(t *testing.T) {
	assert.Equal(t, []float64{2, 1}, ABBARounds([]float64{4, 1, 0.5, 2}))
	assert.Equal(t, []float64{1}, ABBARounds([]float64{2, 0.5, 7}), "a pair without its reverse is left out")
	assert.Empty(t, ABBARounds(nil))
}

func TestCheckPairs(t *testing.T) {
	assert.NoError(t, checkPairs(12))
	assert.NoError(t, checkPairs(2))
	for _, n := range []int{0, 1, 7} {
		assert.ErrorContains(t, checkPairs(n), "even number of pairs", n)
	}
}

func TestPairedRowCancelsOrder(t *testing.T) {
	// Whichever side runs second is 1.5 times faster (the order effect
	// the sequential rows on disk showed): the pair ratios alternate
	// between 1.5r and r/1.5, and their median is meaningless; each
	// round's geometric mean is r again.
	rounds := []float64{1, 1.01, 0.99, 1, 1.005, 0.995, 1, 1.002, 0.998, 1, 1.001, 0.999}
	hf, base := abba(rounds, 1.5)
	row := pairedRow("B4", "order", hf, base, "MiB/s")
	require.Len(t, row.Samples.Ratios, 24)
	assert.InDelta(t, 1.5, row.Samples.Ratios[1], 1e-12, "the pair with the baseline first")
	assert.InDelta(t, 1/1.5, row.Samples.Ratios[0], 1e-12, "the pair with holdfast first")
	require.Len(t, row.Samples.Rounds, 12)
	for i, r := range rounds {
		assert.InDelta(t, r, row.Samples.Rounds[i], 1e-12, "round %d", i)
	}
	assert.InDelta(t, 1, *row.Ratio, 1e-12)
	assert.Equal(t, 12, row.N)
	// 12 rounds: [x(3), x(10)], coverage 96.1%.
	assert.InDelta(t, 0.998, row.CILow, 1e-12)
	assert.InDelta(t, 1.002, row.CIHigh, 1e-12)
	assert.InDelta(t, 1-2*(1+12+66)/4096.0, row.CILevel, 1e-12)
	assert.Equal(t, Met, pairedAtLeast(row, 0.97).Verdict)
	_, warn := checkNull(row)
	assert.False(t, warn, "the order effect does not trip the method check")
}

// TestMedianCICoverage checks the interval on synthetic data: for ABBA
// rounds from a skewed noise around a known median ratio, with an order
// effect, the interval holds the true median in at least 95% of runs
// (within the simulation's own error).
func TestMedianCICoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const truth, trials = 0.9, 4000
	for _, n := range []int{6, 12, 20} {
		hits := 0
		for range trials {
			rounds := make([]float64, n)
			for i := range rounds {
				// Log-normal with a heavy right tail: median exactly truth.
				rounds[i] = truth * math.Exp(0.05*rng.NormFloat64()*(1+rng.ExpFloat64()))
			}
			hf, base := abba(rounds, 1.3)
			row := pairedRow("B4", "sim", hf, base, "")
			if row.CILow <= truth && truth <= row.CIHigh {
				hits++
			}
		}
		got := float64(hits) / trials
		level := MedianCI(make([]float64, n)).Level
		assert.GreaterOrEqual(t, level, Confidence, "n=%d", n)
		// 4000 trials: the observed rate's standard error is ~0.35%.
		assert.InDelta(t, level, got, 0.015, "n=%d: coverage %.3f, promised %.3f", n, got, level)
	}
}

func TestPairedRow(t *testing.T) {
	hf, base := abba([]float64{0.9, 1, 1.1, 0.95, 1.05, 1}, 1)
	row := pairedAtLeast(pairedRow("B4", "x", hf, base, "MiB/s"), 0.97)
	assert.InDelta(t, 1.0, *row.Ratio, 1e-12)
	assert.InDelta(t, 100.0, row.Value, 1e-9)
	assert.InDelta(t, 0.9, row.CILow, 1e-12)
	assert.InDelta(t, 1.1, row.CIHigh, 1e-12)
	assert.Equal(t, 6, row.N)
	assert.Equal(t, Unsteady, row.Verdict, "wider than ±4%: unstable, whatever the target")
	assert.False(t, *row.Met, "unstable is not met")
	_, warn := checkNull(row)
	assert.False(t, warn)

	// Narrow, above the target with its median, below it with its lower
	// bound: missed.
	hf, base = abba([]float64{0.965, 0.975, 0.98, 0.98, 0.985, 0.99}, 1)
	close := pairedAtLeast(pairedRow("B4", "close", hf, base, "MiB/s"), 0.97)
	assert.Greater(t, *close.Ratio, 0.97)
	assert.Equal(t, Missed, close.Verdict, "met only when the lower bound meets the target")
	assert.False(t, *close.Met)

	hf, base = abba([]float64{0.8, 0.81, 0.82, 0.83, 0.84, 0.85}, 1)
	w, warn := checkNull(pairedRow("B4", "y", hf, base, "MiB/s"))
	require.True(t, warn)
	assert.Equal(t, "W", w.ID)

	b, err := json.Marshal(row)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"id", "measure", "ratio", "ci_low", "ci_high", "n", "samples", "verdict"} {
		assert.Contains(t, m, k)
	}
	assert.Len(t, m["samples"].(map[string]any)["ratios"], 12)
	assert.Len(t, m["samples"].(map[string]any)["rounds"], 6)

	r := &Report{}
	hf, base = abba([]float64{0.99, 1, 1.01, 1, 1, 1}, 1)
	r.Add(row, pairedAtLeast(pairedRow("B4", "z", hf, base, "MiB/s"), 0.97))
	var out strings.Builder
	require.NoError(t, r.WriteTable(&out))
	assert.Contains(t, out.String(), "1.000 [0.900, 1.100]  ratio >= 0.97  UNSTABLE")
	assert.Contains(t, out.String(), "1.000 [0.990, 1.010]  ratio >= 0.97  yes")
}

func TestWriteChart(t *testing.T) {
	row := func(name string, goal float64, rounds ...float64) Row {
		hf, base := abba(rounds, 1.2)
		return pairedAtLeast(pairedRow("B4", name, hf, base, "MiB/s"), goal)
	}
	r := &Report{}
	r.Add(row("met", 0.97, 0.99, 1, 1.01, 1, 1, 1),
		row("missed", 0.8, 0.2, 0.21, 0.22, 0.21, 0.21, 0.21),
		row("unstable", 0.97, 0.8, 1, 1.2, 1, 1, 1),
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
