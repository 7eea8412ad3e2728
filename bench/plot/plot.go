// Package plot renders benchmark charts as PNG images with
// gonum.org/v1/plot: cumulative distributions of samples (CDF), grouped
// horizontal bar charts (Bars) and lines over time (Lines).
//
// Charts are 1000 pixels wide (CDFs 600 tall, bar charts as tall as their
// labels need), white, with the title and the legend above the plot, text
// in Liberation Sans, and the Okabe–Ito colour-blind friendly palette;
// series get its colours in order. The same input always gives the same
// bytes.
package plot

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	gonum "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Series is one named set of samples (for CDF) or one value per label (for Bars).
type Series struct {
	Name   string
	Values []float64
}

const (
	width         = 1000 // pixels
	height        = 600  // usual height; bar charts may be taller or shorter
	minBarsHeight = 360
	maxBar        = 36 // thickest bar, in pixels
)

// CDF writes a PNG of the empirical cumulative distribution of each series
// (x: value in `unit`, log10 scale when the data spans more than a decade, y: 0..1 fraction),
// one coloured line per series, with a legend, axis ticks with labels, and a title.
//
// Each line is a step function: at value x it is the fraction of the
// series' samples that are <= x. Curves further left are faster (for
// latencies); a curve's height at x reads as "this share of samples took at
// most x". The x axis is linear when any value is <= 0.
func CDF(w io.Writer, title, unit string, series []Series) error {
	if err := check(series); err != nil {
		return err
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		lo, hi = min(lo, slices.Min(s.Values)), max(hi, slices.Max(s.Values))
	}
	if err := spans(lo, hi); err != nil {
		return err
	}

	p := newPlot(unit, true)
	if lo > 0 && hi/lo > 10 {
		p.X.Scale, p.X.Tick.Marker = gonum.LogScale{}, logTicks{}
		p.X.Min, p.X.Max = nice(lo, false), nice(hi, true)
		p.X.Label.Text += " (log scale)"
	} else {
		p.X.Tick.Marker, p.X.AutoRescale = linearTicks{10}, true
	}
	p.Y.Label.Text = "fraction of samples ≤ x"
	p.Y.Min, p.Y.Max = 0, 1
	var yt gonum.ConstantTicks
	for i := range 11 {
		t := gonum.Tick{Value: float64(i) / 10}
		if i%2 == 0 {
			t.Label = compact(t.Value, 1)
		}
		yt = append(yt, t)
	}
	p.Y.Tick.Marker = yt

	legend := make([]entry, len(series))
	for i, s := range series {
		// The staircase starts at 0 on the smallest sample and rises by
		// 1/n at each sample: horizontal to the next sample, then up.
		v := slices.Sorted(slices.Values(s.Values))
		xys := make(plotter.XYs, len(v)+1)
		xys[0] = plotter.XY{X: v[0]}
		for j, x := range v {
			xys[j+1] = plotter.XY{X: x, Y: float64(j+1) / float64(len(v))}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("plot: series %d (%q): %w", i, s.Name, err)
		}
		l.StepStyle = plotter.PostStep
		l.LineStyle = draw.LineStyle{Color: colour(i), Width: pixels(2)}
		p.Add(l)
		legend[i] = entry{name(i, s), l}
	}
	return render(w, newHeader(title, legend, pixels(width-2*margin)), p, height)
}

// Bars writes a PNG bar chart comparing values across labels: one group
// per label, one bar per series within the group (so a single series is a
// plain bar chart), each bar labelled with its value, a value axis (in
// unit) from 0 with ticks, a legend when there is more than one series,
// and a title.
//
// The chart is horizontal so that long labels such as "ssh -J b1,b2 → sshd"
// stay readable: labels are wrapped in a column on the left, first label
// at the top, bars grow rightwards from a line at 0 (leftwards for
// negative values) along the value axis at the bottom and end in their
// value. The image is 1000 pixels wide and 600 tall, taller when many
// labels or series need the room, shorter (down to 360) when few do.
func Bars(w io.Writer, title, unit string, labels []string, series []Series) error {
	if len(labels) == 0 {
		return errors.New("plot: no labels")
	}
	if err := check(series); err != nil {
		return err
	}
	lo, hi := 0.0, 0.0
	for i, s := range series {
		if len(s.Values) != len(labels) {
			return fmt.Errorf("plot: series %d (%q) has %d values for %d labels", i, s.Name, len(s.Values), len(labels))
		}
		lo, hi = min(lo, slices.Min(s.Values)), max(hi, slices.Max(s.Values))
	}
	if err := spans(lo, hi); err != nil {
		return err
	}

	p := newPlot(unit, false)
	p.X.Tick.Marker, p.X.AutoRescale = linearTicks{8}, true
	// Labels on the y axis, wrapped to at most 280 pixels, first at the top.
	lines := 1
	wrapped := make([]string, len(labels))
	for i, l := range labels {
		wrapped[i] = wrap(l, pixels(280), p.Y.Tick.Label)
		lines = max(lines, len(p.Y.Tick.Label.Handler.Lines(wrapped[i])))
	}
	p.NominalY(wrapped...)
	p.Y.Scale = gonum.InvertedScale{Normalizer: gonum.LinearScale{}}
	p.Y.Padding = 0
	p.Y.Tick.Length = pixels(6) // room between the labels and the bars

	k, n := len(series), len(labels)
	bars := make([]*plotter.BarChart, k)
	var legend []entry
	for j, s := range series {
		b, err := plotter.NewBarChart(plotter.Values(s.Values), 1) // width set below
		if err != nil {
			return fmt.Errorf("plot: series %d (%q): %w", j, s.Name, err)
		}
		b.Horizontal, b.Color, b.LineStyle = true, colour(j), draw.LineStyle{}
		bars[j] = b
		if k > 1 {
			legend = append(legend, entry{name(j, s), b})
		}
	}
	head := newHeader(title, legend, pixels(width-2*margin))

	// Height: one slot per label, bars at least a line of text thick.
	top, bottom := int(head.height()/pixels(1))+margin, 56
	lineH := int(p.Y.Tick.Label.Height("X")/pixels(1)) + 1
	slotFor := func(bar int) int { return max(k*bar+24, lines*lineH+12) }
	h := max(minBarsHeight, min(height, top+bottom+n*slotFor(maxBar+10)), top+bottom+n*slotFor(lineH+1))
	slot := float64(h-top-bottom) / float64(n)
	bar := pixels(min(maxBar, int(slot-max(10, min(slot/4, 30)))/k))

	for j, b := range bars {
		b.Width = bar
		// Series top to bottom within a group (+y is up on the canvas).
		b.Offset = (vg.Length(k-1)/2 - vg.Length(j)) * bar
		p.Add(b)
		// Each bar's value just beyond its end.
		for _, neg := range []bool{false, true} {
			var at plotter.XYLabels
			for i, v := range b.Values {
				if v < 0 == neg {
					at.XYs = append(at.XYs, plotter.XY{X: v, Y: float64(i)})
					at.Labels = append(at.Labels, compact(v, 3))
				}
			}
			if len(at.XYs) == 0 {
				continue
			}
			l, err := plotter.NewLabels(at)
			if err != nil {
				return err
			}
			l.Offset = vg.Point{X: pixels(5), Y: b.Offset}
			for i := range l.TextStyle {
				l.TextStyle[i] = style(10)
				l.TextStyle[i].YAlign = draw.YCenter
			}
			if neg {
				l.Offset.X = -l.Offset.X
				for i := range l.TextStyle {
					l.TextStyle[i].XAlign = draw.XRight
				}
			}
			p.Add(l)
		}
	}
	// The zero line, which also spreads the groups over equal slots.
	zero, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: -0.5}, {X: 0, Y: float64(n) - 0.5}})
	zero.LineStyle = draw.LineStyle{Color: ink, Width: vg.Points(0.75)}
	p.Add(zero)
	return render(w, head, p, h)
}

// Lines writes a PNG of series sampled at the same x values, xs (in
// xUnit, ascending: seconds since an event, say), one coloured step line
// per series, with the y axis (yUnit) from 0, a legend and a title: a
// count over time, such as tunnels per region. Each series has one value
// per x; a value holds until the next x.
func Lines(w io.Writer, title, xUnit, yUnit string, xs []float64, series []Series) error {
	if len(xs) < 2 {
		return errors.New("plot: lines need at least two x values")
	}
	if !slices.IsSorted(xs) {
		return errors.New("plot: the x values are not in ascending order")
	}
	if err := check(series); err != nil {
		return err
	}
	if err := check([]Series{{Name: "x", Values: xs}}); err != nil {
		return err
	}
	hi := 0.0
	for i, s := range series {
		if len(s.Values) != len(xs) {
			return fmt.Errorf("plot: series %d (%q) has %d values for %d x values", i, s.Name, len(s.Values), len(xs))
		}
		hi = max(hi, slices.Max(s.Values))
	}
	if err := spans(xs[0], xs[len(xs)-1]); err != nil {
		return err
	}
	if err := spans(0, hi); err != nil {
		return err
	}
	p := newPlot(xUnit, true)
	p.X.Tick.Marker, p.X.AutoRescale = linearTicks{10}, true
	p.X.Min, p.X.Max = xs[0], xs[len(xs)-1]
	p.Y.Label.Text = yUnit
	p.Y.Tick.Marker, p.Y.AutoRescale = linearTicks{8}, true
	p.Y.Min, p.Y.Max = 0, max(hi*1.05, 1)
	legend := make([]entry, len(series))
	for i, s := range series {
		xys := make(plotter.XYs, len(xs))
		for j, x := range xs {
			xys[j] = plotter.XY{X: x, Y: s.Values[j]}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("plot: series %d (%q): %w", i, s.Name, err)
		}
		l.StepStyle = plotter.PostStep
		l.LineStyle = draw.LineStyle{Color: colour(i), Width: pixels(2)}
		p.Add(l)
		legend[i] = entry{name(i, s), l}
	}
	return render(w, newHeader(title, legend, pixels(width-2*margin)), p, height)
}

// name is how the legend calls series i.
func name(i int, s Series) string {
	if s.Name == "" {
		return fmt.Sprintf("series %d", i+1)
	}
	return s.Name
}

// spans reports an error if an axis cannot span lo..hi.
func spans(lo, hi float64) error {
	if math.IsInf(hi-lo, 0) {
		return errors.New("plot: values span too wide a range to draw")
	}
	return nil
}

// check reports what is wrong with series, if anything.
func check(series []Series) error {
	if len(series) == 0 {
		return errors.New("plot: no series")
	}
	for i, s := range series {
		if len(s.Values) == 0 {
			return fmt.Errorf("plot: series %d (%q) has no values", i, s.Name)
		}
		for j, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("plot: series %d (%q) value %d is %v", i, s.Name, j, v)
			}
		}
	}
	return nil
}
