package bench

import (
	"fmt"
	"image/color"

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
	p.Title.Text = fmt.Sprintf("holdfast / without, median pair ratio and its %.0f%% interval (%s)", Confidence*100, r.Started.Format("2006-01-02"))
	p.X.Label.Text = "ratio (1 = as fast as without holdfast); blue tick: target; green met, red missed, orange unstable"
	p.X.Min, p.X.Max = 0, 1.1
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
		p.X.Max = max(p.X.Max, row.CIHigh+0.05)
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
	p.NominalY(names...)
	p.Add(plotter.NewGrid())
	return p.Save(11*vg.Inch, vg.Length(1.2+0.28*float64(len(rows)))*vg.Inch, path)
}
