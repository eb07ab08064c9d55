package bench

import (
	"fmt"
	"image/color"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Chart colours by verdict.
var (
	colMet      = color.RGBA{0x1a, 0x7f, 0x37, 0xff}
	colMissed   = color.RGBA{0xcf, 0x22, 0x2e, 0xff}
	colUnstable = color.RGBA{0xd4, 0x8a, 0x00, 0xff}
	colNone     = color.RGBA{0x40, 0x40, 0x40, 0xff}
	colTarget   = color.RGBA{0x09, 0x69, 0xda, 0xff}
)

// errPoints are ratios with their intervals, relative to the ratio.
type errPoints struct {
	plotter.XYs
	plotter.XErrors
}

// WriteChart draws every paired ratio of the report as a point with its
// interval, the row's target as a blue tick across it and 1 (as fast as
// without holdfast) as a dashed line, to path: SVG, PNG or PDF by its
// extension. It does nothing when no row is paired.
func (r *Report) WriteChart(path string) error {
	var rows []Row
	for _, row := range r.Rows {
		if row.Paired != nil && row.Ratio != nil {
			rows = append(rows, row)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("holdfast / without: median of the ABBA rounds' ratios and its %.0f%% interval (%s)", Confidence*100, r.Started.Format("2006-01-02"))
	p.X.Label.Text = "ratio, log scale (1 = as fast as without holdfast); blue tick: target; green met, red missed, orange unstable"
	// A log scale: a ratio of 0.5 and one of 2 are as far from 1, and one
	// wide interval does not squeeze the others into a corner.
	p.X.Scale = plot.LogScale{}
	p.X.Min, p.X.Max = 0.8, 1.25
	groups := map[color.Color]*errPoints{}
	names := make([]string, len(rows))
	for i, row := range rows {
		y := float64(len(rows) - 1 - i) // first row on top
		names[len(rows)-1-i] = row.ID + " " + row.Name
		c := colNone
		switch row.Verdict {
		case Met:
			c = colMet
		case Missed:
			c = colMissed
		case Unsteady:
			c = colUnstable
		}
		g := groups[c]
		if g == nil {
			g = &errPoints{}
			groups[c] = g
		}
		g.XYs = append(g.XYs, plotter.XY{X: *row.Ratio, Y: y})
		g.XErrors = append(g.XErrors, struct{ Low, High float64 }{*row.Ratio - row.CILow, row.CIHigh - *row.Ratio})
		p.X.Min, p.X.Max = min(p.X.Min, row.CILow*0.9), max(p.X.Max, row.CIHigh*1.1)
		if row.Goal > 0 {
			tick, err := plotter.NewLine(plotter.XYs{{X: row.Goal, Y: y - 0.4}, {X: row.Goal, Y: y + 0.4}})
			if err != nil {
				return err
			}
			tick.Color, tick.Width = colTarget, vg.Points(2)
			p.Add(tick)
		}
	}
	one, err := plotter.NewLine(plotter.XYs{{X: 1, Y: -0.5}, {X: 1, Y: float64(len(rows)) - 0.5}})
	if err != nil {
		return err
	}
	one.Color, one.Dashes = color.Gray{0x99}, []vg.Length{vg.Points(3), vg.Points(3)}
	p.Add(one)
	for c, g := range groups {
		bars, err := plotter.NewXErrorBars(g)
		if err != nil {
			return err
		}
		bars.Color, bars.Width = c, vg.Points(1.5)
		pts, err := plotter.NewScatter(g)
		if err != nil {
			return err
		}
		pts.Color, pts.Shape, pts.Radius = c, draw.CircleGlyph{}, vg.Points(3)
		p.Add(bars, pts)
	}
	p.X.Tick.Marker = ratioTicks{}
	p.NominalY(names...)
	p.Add(plotter.NewGrid())
	return p.Save(14*vg.Inch, vg.Length(1.2+0.28*float64(len(rows)))*vg.Inch, path)
}

// ratioTicks marks the ratios a reader looks for, within the axis.
type ratioTicks struct{}

// Ticks implements plot.Ticker.
func (ratioTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, v := range []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100} {
		if lo <= v && v <= hi {
			t := plot.Tick{Value: v}
			if v != 0.3 && v != 0.7 && v != 0.9 && v != 1.1 && v != 1.5 && v != 3 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64) // the others unlabelled: they would overlap
			}
			ts = append(ts, t)
		}
	}
	return ts
}
