package bench

import (
	"fmt"
	"math"
	"slices"
)

// Confidence is the level the intervals of paired rows aim for.
const Confidence = 0.95

// Unstable is the widest interval a verdict is given for: an interval
// reaching further than this fraction of the median on either side says
// the machine was too noisy to decide.
const Unstable = 0.04

// Interval is the median of paired ratios with a distribution-free
// confidence interval for it.
type Interval struct {
	Median, Low, High float64
	// Level is the interval's exact coverage (at least Confidence when
	// there are enough pairs; see MedianCI).
	Level float64
	N     int
}

// PairRatios returns a[i]/b[i] for each pair.
func PairRatios(a, b []float64) []float64 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("bench: %d samples against %d", len(a), len(b)))
	}
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return r
}

// MedianCI is the median of x and the confidence interval for the
// population median from x's order statistics: [x(k), x(n+1-k)] with the
// largest k whose coverage, 1 - 2·P(Binomial(n, 1/2) < k), is at least
// Confidence. It assumes nothing about the distribution, only that the
// samples are independent. Below 6 samples no k reaches 95% and the
// interval is the whole range, with its smaller coverage in Level (5
// samples: 93.75%).
func MedianCI(x []float64) Interval {
	n := len(x)
	if n == 0 {
		return Interval{Median: math.NaN(), Low: math.NaN(), High: math.NaN()}
	}
	s := slices.Clone(x)
	slices.Sort(s)
	k, level := 1, coverage(n, 1)
	for k+1 <= (n+1)/2 && coverage(n, k+1) >= Confidence {
		k++
		level = coverage(n, k)
	}
	return Interval{Median: median(s), Low: s[k-1], High: s[n-k], Level: level, N: n}
}

// coverage is P(x(k) <= median <= x(n+1-k)) for n independent samples of
// a continuous distribution: 1 - 2·P(Binomial(n, 1/2) <= k-1).
func coverage(n, k int) float64 {
	tail := 0.0
	for i := range k {
		tail += binom(n, i)
	}
	return 1 - 2*tail/math.Exp2(float64(n))
}

func binom(n, k int) float64 {
	c := 1.0
	for i := range k {
		c = c * float64(n-i) / float64(i+1)
	}
	return c
}

// Wide says whether the interval reaches further than Unstable of the
// median on either side.
func (iv Interval) Wide() bool {
	return iv.Median-iv.Low > Unstable*iv.Median || iv.High-iv.Median > Unstable*iv.Median
}

// Contains says whether v lies in the interval.
func (iv Interval) Contains(v float64) bool { return iv.Low <= v && v <= iv.High }

// Verdicts of a row with an interval.
const (
	Met      = "met"
	Missed   = "missed"
	Unsteady = "unstable"
)

// VerdictAtLeast decides a target "ratio >= min": met only when the whole
// interval meets it, unstable when the interval is too wide to say.
func (iv Interval) VerdictAtLeast(min float64) string {
	switch {
	case iv.Wide():
		return Unsteady
	case iv.Low >= min:
		return Met
	default:
		return Missed
	}
}

// VerdictAtMost decides a target "ratio <= max" the same way.
func (iv Interval) VerdictAtMost(max float64) string {
	switch {
	case iv.Wide():
		return Unsteady
	case iv.High <= max:
		return Met
	default:
		return Missed
	}
}

// Paired is what a row measured in pairs adds: the interval of its ratio
// and the raw samples, one per run, pair i being Holdfast[i] against
// Base[i].
type Paired struct {
	CILow   float64 `json:"ci_low"`
	CIHigh  float64 `json:"ci_high"`
	CILevel float64 `json:"ci_level"`
	// N is the number of ABBA rounds (two pairs each) the interval is
	// from.
	N int `json:"n"`
	// Goal is the ratio the target asks for, 0 when there is none.
	Goal float64 `json:"target_ratio,omitempty"`
	// Verdict is Met, Missed or Unsteady when the row has a target.
	Verdict string  `json:"verdict,omitempty"`
	Samples Samples `json:"samples"`
}

// Samples are a paired row's raw figures: run i of holdfast against run
// i of the baseline, pairs 2k and 2k+1 in opposite orders.
type Samples struct {
	Holdfast []float64 `json:"holdfast"`
	Base     []float64 `json:"base"`
	Ratios   []float64 `json:"ratios"`
	// Rounds are the ABBA rounds' ratios (ABBARounds), whose median
	// and interval the row gives.
	Rounds []float64 `json:"rounds"`
}

// ABBARounds combines a row's pair ratios into round ratios: pairs 2k and
// 2k+1 ran in opposite orders (holdfast first, then the baseline first),
// and their round's ratio is the geometric mean of the two. A factor the
// order alone adds (the second run of a pair finding the disk warm, say)
// multiplies one ratio and divides the other, so it cancels. A last pair
// without its reverse is left out.
func ABBARounds(ratios []float64) []float64 {
	r := make([]float64, len(ratios)/2)
	for k := range r {
		r[k] = math.Sqrt(ratios[2*k] * ratios[2*k+1])
	}
	return r
}

// checkPairs refuses a number of pairs that does not make whole ABBA
// rounds.
func checkPairs(n int) error {
	if n < 2 || n%2 != 0 {
		return fmt.Errorf("%d pairs: ABBA rounds need an even number of pairs, at least 2 (12 gives six rounds, the fewest whose interval reaches 95%%)", n)
	}
	return nil
}

// pairedRow builds a row from runs made in pairs whose order alternates
// (ABBA): the figures are each side's median, the ratio the median of the
// rounds' ratios (ABBARounds: a machine slowing down for a while moves
// both sides of a pair together, and the order's own effect cancels in a
// round) with its interval.
func pairedRow(id, name string, hf, base []float64, unit string) Row {
	ratios := PairRatios(hf, base)
	rounds := ABBARounds(ratios)
	iv := MedianCI(rounds)
	return Row{ID: id, Name: name, Value: median(hf), Base: ptr(median(base)), Ratio: ptr(iv.Median), Unit: unit,
		Paired: &Paired{CILow: iv.Low, CIHigh: iv.High, CILevel: iv.Level, N: iv.N,
			Samples: Samples{Holdfast: hf, Base: base, Ratios: ratios, Rounds: rounds}}}
}

// Interval returns a paired row's interval.
func (p *Paired) Interval(median float64) Interval {
	return Interval{Median: median, Low: p.CILow, High: p.CIHigh, Level: p.CILevel, N: p.N}
}

// PairedAtLeast builds a row from runs made in ABBA pairs (pairedRow)
// with the target "ratio >= min" and its verdict (pairedAtLeast): for
// benchmarks run outside this package's suites, the guest's.
func PairedAtLeast(id, name string, hf, base []float64, unit string, min float64) Row {
	return pairedAtLeast(pairedRow(id, name, hf, base, unit), min)
}

// pairedAtLeast sets a paired row's target "ratio >= min" and its verdict
// from the interval: met only when the lower bound meets it.
func pairedAtLeast(row Row, min float64) Row {
	row.Target, row.Goal = fmt.Sprintf("ratio >= %.2f", min), min
	row.Verdict = row.Paired.Interval(*row.Ratio).VerdictAtLeast(min)
	row.Met = ptr(row.Verdict == Met)
	return row
}

// checkNull is the method's own check: a row whose two sides are the same
// filesystem must have an interval containing 1. It returns a warning row
// when it does not.
func checkNull(row Row) (Row, bool) {
	if row.Paired.Interval(*row.Ratio).Contains(1) {
		return Row{}, false
	}
	return Row{ID: "W", Name: "method check failed: " + row.Name,
		Value: *row.Ratio, Unit: "",
		Note: fmt.Sprintf("the same filesystem on both sides, yet the interval [%.3f, %.3f] excludes 1: the machine changed between the sides of the pairs, distrust this run", row.CILow, row.CIHigh)}, true
}
