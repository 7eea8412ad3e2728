// Package plot renders benchmark charts as PNG images: cumulative
// distributions of samples (CDF) and grouped bar charts (Bars).
//
// Charts are about 1000x600 pixels, white, drawn with a built-in bitmap font
// and the Okabe–Ito colour-blind friendly palette; series get its colours
// in order. The same input always gives the same bytes. Text the font
// cannot draw is replaced by ASCII look-alikes ("→" becomes "->", "µ"
// becomes "u").
package plot

import (
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"slices"
)

// Series is one named set of samples (for CDF) or one value per label (for Bars).
type Series struct {
	Name   string
	Values []float64
}

const (
	width         = 1000
	height        = 600 // usual height; bar charts may be taller or shorter
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
	sorted := make([][]float64, len(series))
	lo, hi := math.Inf(1), math.Inf(-1)
	names := make([]string, len(series))
	for i, s := range series {
		sorted[i] = slices.Clone(s.Values)
		slices.Sort(sorted[i])
		lo, hi = min(lo, sorted[i][0]), max(hi, sorted[i][len(sorted[i])-1])
		names[i] = s.Name
	}

	x0, x1 := 80, width-40
	top := header(canvas{}, title, names, x0, x1, width) + 8
	y0, y1 := top, height-56

	var xa axis
	if lo > 0 && hi/lo > 10 {
		xa = logAxis(lo, hi, x1-x0)
	} else {
		var err error
		if xa, err = linearAxis(lo, hi, (x1-x0)/90); err != nil {
			return err
		}
	}
	ya, _ := linearAxis(0, 1, (y1-y0)/50)

	c := newCanvas(width, height)
	header(c, title, names, x0, x1, width)
	for _, p := range xa.minor {
		c.vline(xa.tickPix(p, x0, x1), y0, y1, faint)
	}
	for _, t := range xa.ticks {
		c.vline(xa.tickPix(t.pos, x0, x1), y0, y1, light)
	}
	for _, t := range ya.ticks {
		c.hline(x0, x1, ya.tickPix(t.pos, y1, y0), light)
	}
	for i, vals := range sorted {
		col := colour(i)
		n := float64(len(vals))
		px, py := xa.pix(vals[0], x0, x1), y1
		for j, v := range vals {
			x, y := xa.pix(v, x0, x1), ya.pix(float64(j+1)/n, y1, y0)
			c.thickH(px, x, py, col)
			c.thickV(x, py, y, col)
			px, py = x, y
		}
	}

	// Axes, ticks and their labels.
	c.hline(x0, x1, y1, ink)
	c.vline(x0, y0, y1, ink)
	for _, t := range xa.ticks {
		x := xa.tickPix(t.pos, x0, x1)
		c.vline(x, y1, y1+5, ink)
		c.text(t.label, x-textW(t.label)/2, y1+9, 1, false, ink)
	}
	for _, t := range ya.ticks {
		y := ya.tickPix(t.pos, y1, y0)
		c.hline(x0-5, x0, y, ink)
		c.text(t.label, x0-9-textW(t.label), y-glyphH/2, 1, false, ink)
	}
	xl := unit
	if xl == "" {
		xl = "value"
	}
	if xa.log {
		xl += " (log scale)"
	}
	c.text(xl, (x0+x1-textW(xl))/2, y1+30, 1, false, ink)
	yl := "fraction of samples <= x"
	c.text(yl, 16, (y0+y1-textW(yl))/2, 1, true, ink)
	return png.Encode(w, c)
}

// Bars writes a PNG bar chart comparing values across labels: one group
// per label, one bar per series within the group (so a single series is a
// plain bar chart), each bar labelled with its value, a value axis (in
// unit) from 0 with ticks, a legend when there is more than one series,
// and a title.
//
// The chart is horizontal so that long labels such as "ssh -J b1,b2 → sshd"
// stay readable: labels are wrapped in a column on the left, bars grow
// rightwards from 0 along the value axis at the bottom (leftwards for
// negative values) and end in their value. The image is 1000 pixels wide
// and 600 tall, taller when many labels or series need the room.
func Bars(w io.Writer, title, unit string, labels []string, series []Series) error {
	if len(labels) == 0 {
		return errors.New("plot: no labels")
	}
	if err := check(series); err != nil {
		return err
	}
	lo, hi := 0.0, 0.0
	valW := 0 // widest value label
	names := make([]string, len(series))
	for i, s := range series {
		if len(s.Values) != len(labels) {
			return fmt.Errorf("plot: series %d (%q) has %d values for %d labels", i, s.Name, len(s.Values), len(labels))
		}
		for _, v := range s.Values {
			lo, hi = min(lo, v), max(hi, v)
			valW = max(valW, textW(compact(v, 3)))
		}
		names[i] = s.Name
	}
	if len(series) == 1 {
		names = nil // no legend for a single series
	}
	if lo == hi {
		hi = 1
	}

	// Columns: wrapped labels, room for negative value labels, the bars,
	// room for positive value labels.
	labW := 0
	for _, l := range labels {
		labW = max(labW, textW(l))
	}
	labW = min(labW, 280)
	wrapped := make([][]string, len(labels))
	lines := 1
	for i, l := range labels {
		wrapped[i] = wrap(l, labW)
		lines = max(lines, len(wrapped[i]))
	}
	x0 := 16 + labW + 12
	if lo < 0 {
		x0 += valW + 6
	}
	x1 := width - 16 - max(valW+6, 20)

	// Rows: one slot per label, bars at least a line of text thick.
	top := header(canvas{}, title, names, x0, x1, width) + 4
	bottom := 52
	k := len(series)
	slotFor := func(bar int) int { return max(k*bar+30, lines*glyphH+12) }
	h := max(minBarsHeight, min(height, top+bottom+len(labels)*slotFor(maxBar+10)), top+bottom+len(labels)*slotFor(glyphH+1))
	y0, y1 := top, h-bottom
	slot := float64(y1-y0) / float64(len(labels))
	gap := max(10, min(slot/4, 30))
	bar := min(maxBar, int(slot-gap)/k)

	xa, err := linearAxis(lo, hi, (x1-x0)/90)
	if err != nil {
		return err
	}
	c := newCanvas(width, h)
	header(c, title, names, x0, x1, width)
	for _, t := range xa.ticks {
		c.vline(xa.tickPix(t.pos, x0, x1), y0, y1, light)
	}
	zero := xa.pix(0, x0, x1)
	for i, ls := range wrapped {
		mid := y0 + int(slot*(float64(i)+0.5))
		ly := mid - len(ls)*glyphH/2
		for j, l := range ls {
			c.text(l, 16+labW-textW(l), ly+j*glyphH, 1, false, ink)
		}
		by := mid - k*bar/2
		for j, s := range series {
			v := s.Values[i]
			x := xa.pix(v, x0, x1)
			c.rect(min(zero, x), by+1, max(zero, x), by+bar-1, colour(j))
			l := compact(v, 3)
			lx := x + 5
			if v < 0 {
				lx = x - 5 - textW(l)
			}
			c.text(l, lx, by+(bar-glyphH)/2, 1, false, ink)
			by += bar
		}
	}

	// Value axis at the bottom, zero line.
	c.hline(x0, x1, y1, ink)
	c.vline(zero, y0, y1, ink)
	for _, t := range xa.ticks {
		x := xa.tickPix(t.pos, x0, x1)
		c.vline(x, y1, y1+5, ink)
		c.text(t.label, x-textW(t.label)/2, y1+9, 1, false, ink)
	}
	xl := unit
	if xl == "" {
		xl = "value"
	}
	c.text(xl, (x0+x1-textW(xl))/2, y1+30, 1, false, ink)
	return png.Encode(w, c)
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
