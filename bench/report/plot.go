package report

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot sizes. At vgimg's 96 dpi a bar or latency plot's PNG is 576×384
// pixels and a time series' 864×384.
const (
	BarWidth    = 6 * vg.Inch
	SeriesWidth = 9 * vg.Inch
	PlotHeight  = 4 * vg.Inch
)

// PlotName is the base name of a plot of workload w (and job j, or "").
func PlotName(w, j, kind string) string {
	s := w
	if j != "" {
		s += "-" + j
	}
	s += "-" + kind
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// plot writes every workload's plots into dir as PNG and SVG and returns
// their base names by workload.
func (r *Report) plot(dir string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, w := range r.Workloads {
		for _, j := range w.Jobs {
			p, err := barPlot(w, j)
			if err != nil {
				return nil, err
			}
			name := PlotName(w.Name, j.Name, "bars")
			if err := save(p, BarWidth, dir, name); err != nil {
				return nil, err
			}
			out[w.Name] = append(out[w.Name], name)
			if p := latencyPlot(w, j); p != nil {
				name := PlotName(w.Name, j.Name, "latency")
				if err := save(p, BarWidth, dir, name); err != nil {
					return nil, err
				}
				out[w.Name] = append(out[w.Name], name)
			}
		}
		if len(w.Series) > 0 {
			p, err := seriesPlot(w)
			if err != nil {
				return nil, err
			}
			name := PlotName(w.Name, "", "throughput")
			if err := save(p, SeriesWidth, dir, name); err != nil {
				return nil, err
			}
			out[w.Name] = append(out[w.Name], name)
		}
	}
	return out, nil
}

func save(p *plot.Plot, width vg.Length, dir, name string) error {
	for _, ext := range []string{".png", ".svg"} {
		if err := p.Save(width, PlotHeight, filepath.Join(dir, name+ext)); err != nil {
			return fmt.Errorf("report: plot %s%s: %w", name, ext, err)
		}
	}
	return nil
}

// barPlot is one bar per target, zos first in its own colour.
func barPlot(w Workload, j Job) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = w.Name + ": " + j.Name
	p.Y.Label.Text = j.Unit
	if j.LowerIsBetter {
		p.Y.Label.Text += " (lower is better)"
	}
	var names []string
	for i, x := range j.Results {
		vals := make(plotter.Values, len(j.Results))
		vals[i] = x.Value
		bc, err := plotter.NewBarChart(vals, vg.Points(40))
		if err != nil {
			return nil, err
		}
		bc.Color = plotutil.Color(i)
		bc.LineStyle.Width = 0
		p.Add(bc)
		label := x.Target
		if x.Anchor && x.Ratio > 0 {
			label += fmt.Sprintf("\n%.2f×", x.Ratio)
		}
		names = append(names, label)
	}
	p.NominalX(names...)
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	return p, nil
}

// latencyPlot groups p50, p99, p99.9 with one bar per target, or nil when
// no target of j has latencies.
func latencyPlot(w Workload, j Job) *plot.Plot {
	var with []Result
	for _, x := range j.Results {
		if x.Latency != nil && (x.Latency.P50 > 0 || x.Latency.P99 > 0) {
			with = append(with, x)
		}
	}
	if len(with) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = w.Name + ": " + j.Name + " latency"
	p.Y.Label.Text = "µs"
	p.Y.Min = 0
	bw := vg.Points(min(24, 120/float64(len(with))))
	for i, x := range with {
		vals := plotter.Values{x.Latency.P50, x.Latency.P99, x.Latency.P999}
		bc, err := plotter.NewBarChart(vals, bw)
		if err != nil {
			continue
		}
		bc.Color = plotutil.Color(i)
		bc.LineStyle.Width = 0
		bc.Offset = bw * vg.Length(float64(i)-float64(len(with)-1)/2)
		p.Add(bc)
		p.Legend.Add(x.Target, bc)
	}
	p.Legend.Top = true
	p.NominalX("p50", "p99", "p99.9")
	p.Add(plotter.NewGrid())
	return p
}

// seriesPlot draws every series over time with the events as vertical
// lines labelled at the top.
func seriesPlot(w Workload) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = w.Name + ": throughput over time"
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = w.Series[0].Unit
	top := 0.0
	for i, s := range w.Series {
		pts := make(plotter.XYs, len(s.Points))
		for k, pt := range s.Points {
			pts[k] = plotter.XY{X: pt.T, Y: pt.V}
			top = math.Max(top, pt.V)
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	if top == 0 {
		top = 1
	}
	p.Y.Min, p.Y.Max = 0, top*1.25
	var lbl plotter.XYLabels
	for k, e := range w.Events {
		l, err := plotter.NewLine(plotter.XYs{{X: e.T, Y: 0}, {X: e.T, Y: top * 1.25}})
		if err != nil {
			return nil, err
		}
		l.Color = color.RGBA{R: 200, A: 255}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		lbl.XYs = append(lbl.XYs, plotter.XY{X: e.T, Y: top * (1.2 - 0.07*float64(k%3))})
		lbl.Labels = append(lbl.Labels, " "+e.Label)
	}
	if len(lbl.XYs) > 0 {
		labels, err := plotter.NewLabels(lbl)
		if err != nil {
			return nil, err
		}
		for i := range labels.TextStyle {
			labels.TextStyle[i].Color = color.RGBA{R: 160, A: 255}
			labels.TextStyle[i].XAlign = draw.XLeft
		}
		p.Add(labels)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p, nil
}
