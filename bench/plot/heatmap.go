package plot

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Matrix is one panel of a heat map: Values[i][j] is the value of row i,
// column j.
type Matrix struct {
	Name   string
	Values [][]float64
}

// ramp is viridis at five stops, dark (low values) to light (high): a
// sequential scale that reads in grey and to colour-blind eyes.
var ramp = []color.RGBA{
	{0x44, 0x01, 0x54, 0xff},
	{0x3b, 0x52, 0x8b, 0xff},
	{0x21, 0x91, 0x8c, 0xff},
	{0x5e, 0xc9, 0x62, 0xff},
	{0xfd, 0xe7, 0x25, 0xff},
}

// shade is the colour of f in 0..1 on the ramp.
func shade(f float64) color.RGBA {
	f = min(max(f, 0), 1) * float64(len(ramp)-1)
	i := min(int(f), len(ramp)-2)
	t := f - float64(i)
	a, b := ramp[i], ramp[i+1]
	mix := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + t*(float64(y)-float64(x)))) }
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 0xff}
}

// scale maps values onto 0..1 of the ramp: linearly, or by log10 when
// every value is positive and they span more than a decade.
type scale struct {
	lo, hi float64
	log    bool
}

func (s scale) at(v float64) float64 {
	if s.hi == s.lo {
		return 0.5
	}
	if s.log {
		return math.Log10(v/s.lo) / math.Log10(s.hi/s.lo)
	}
	return (v - s.lo) / (s.hi - s.lo)
}

// Heat-map geometry, in pixels.
const (
	cellH     = 40  // a cell's height
	maxCellW  = 120 // a cell's widest
	panelGap  = 24  // between panels
	perRow    = 3   // panels side by side
	barWidth  = 480 // the colour bar
	barHeight = 14
)

// HeatMaps writes a PNG of one or more matrices of the same shape, up to
// three side by side: rows labelled rows (top to bottom) and columns cols,
// each panel under its name, each cell filled with its value's colour on
// one scale that every panel shares (log10 when the values are positive
// and span more than a decade) and labelled with the value. A colour bar
// with ticks in unit is at the bottom, under the title at the top. The
// image is 1000 pixels wide and as tall as the panels need.
func HeatMaps(w io.Writer, title, unit string, rows, cols []string, maps []Matrix) (err error) {
	if len(rows) == 0 || len(cols) == 0 {
		return errors.New("plot: a heat map needs rows and columns")
	}
	if len(maps) == 0 {
		return errors.New("plot: no matrices")
	}
	sc := scale{lo: math.Inf(1), hi: math.Inf(-1), log: true}
	for k, m := range maps {
		if len(m.Values) != len(rows) {
			return fmt.Errorf("plot: matrix %d (%q) has %d rows for %d labels", k, m.Name, len(m.Values), len(rows))
		}
		for i, r := range m.Values {
			if len(r) != len(cols) {
				return fmt.Errorf("plot: matrix %d (%q) row %d has %d values for %d columns", k, m.Name, i, len(r), len(cols))
			}
			for j, v := range r {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return fmt.Errorf("plot: matrix %d (%q) value [%d][%d] is %v", k, m.Name, i, j, v)
				}
				sc.lo, sc.hi = min(sc.lo, v), max(sc.hi, v)
			}
		}
	}
	if err := spans(sc.lo, sc.hi); err != nil {
		return err
	}
	sc.log = sc.lo > 0 && sc.hi/sc.lo > 10

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot: %v", r)
		}
	}()
	label, small, name := style(10), style(9), style(12)
	head := newHeader(title, nil, pixels(width-2*margin))
	// Panel layout: a column of row labels, then the cells.
	labelW := 0
	for _, r := range rows {
		labelW = max(labelW, int(label.Width(r)/pixels(1))+8)
	}
	across := min(len(maps), perRow)
	down := (len(maps) + across - 1) / across
	panelW := (width - 2*margin - (across-1)*panelGap) / across
	cellW := min(maxCellW, (panelW-labelW)/len(cols))
	panelW = labelW + cellW*len(cols)
	nameH, colH := 22, 18
	panelH := nameH + colH + cellH*len(rows)
	headH := int(head.height() / pixels(1))
	barH := barHeight + 40 // bar, tick labels and unit
	h := margin + headH + down*panelH + (down-1)*panelGap + panelGap + barH + margin

	img := vgimg.NewWith(vgimg.UseWH(pixels(width), pixels(h)), vgimg.UseDPI(dpi))
	c := draw.New(img)
	// y grows upwards: top is the pixel row from the top of the image.
	pt := func(x, top float64) vg.Point {
		return vg.Point{X: pixels(1) * vg.Length(x), Y: pixels(1) * vg.Length(float64(h)-top)}
	}
	rect := func(x, top, w, ht float64, col color.Color) {
		c.FillPolygon(col, []vg.Point{pt(x, top), pt(x+w, top), pt(x+w, top+ht), pt(x, top+ht)})
	}
	write := func(st text.Style, x, top float64, s string) { c.FillText(st, pt(x, top), s) }
	rect(0, 0, width, float64(h), color.White)
	head.draw(draw.Crop(c, pixels(margin), -pixels(margin), 0, -pixels(margin)))

	// Centre the row of panels.
	left0 := float64(width-(across*panelW+(across-1)*panelGap)) / 2
	for k, m := range maps {
		x0 := left0 + float64((k%across)*(panelW+panelGap))
		y0 := float64(margin + headH + (k/across)*(panelH+panelGap))
		write(aligned(name, draw.XCenter, draw.YTop), x0+float64(labelW)+float64(cellW*len(cols))/2, y0, m.Name)
		for j, col := range cols {
			write(aligned(small, draw.XCenter, draw.YBottom), x0+float64(labelW+j*cellW)+float64(cellW)/2, y0+float64(nameH+colH-4), col)
		}
		for i, row := range rows {
			top := y0 + float64(nameH+colH+i*cellH)
			write(aligned(label, draw.XRight, draw.YCenter), x0+float64(labelW-8), top+cellH/2, row)
			for j, v := range m.Values[i] {
				x := x0 + float64(labelW+j*cellW)
				fill := shade(sc.at(v))
				rect(x+1, top+1, float64(cellW-2), cellH-2, fill)
				ts := aligned(label, draw.XCenter, draw.YCenter)
				if luminance(fill) < 0.45 {
					ts.Color = color.White
				}
				write(ts, x+float64(cellW)/2, top+cellH/2, compact(v, 3))
			}
		}
	}

	// The colour bar, with ticks where the axes of the other charts would
	// put them.
	barTop := float64(h - margin - barH)
	barLeft := float64(width-barWidth) / 2
	const steps = 240
	for s := range steps {
		rect(barLeft+float64(s)*barWidth/steps, barTop, barWidth/steps+0.5, barHeight, shade(float64(s)/(steps-1)))
	}
	var ticks []float64
	if sc.log {
		for _, t := range (logTicks{}).Ticks(sc.lo, sc.hi) {
			if t.Label != "" {
				ticks = append(ticks, t.Value)
			}
		}
	} else if sc.hi > sc.lo {
		for _, t := range (linearTicks{5}).Ticks(sc.lo, sc.hi) {
			if t.Label != "" && t.Value >= sc.lo-1e-9*math.Abs(sc.lo) && t.Value <= sc.hi+1e-9*math.Abs(sc.hi) {
				ticks = append(ticks, t.Value)
			}
		}
	}
	if len(ticks) < 2 {
		ticks = []float64{sc.lo, sc.hi}
	}
	for _, t := range ticks {
		x := barLeft + sc.at(t)*barWidth
		if sc.hi == sc.lo {
			x = barLeft + barWidth/2
		}
		rect(x-0.5, barTop+barHeight, 1, 4, ink)
		write(aligned(small, draw.XCenter, draw.YTop), x, barTop+barHeight+5, compact(t, 3))
	}
	unitText := unit
	if sc.log {
		unitText += " (log scale)"
	}
	write(aligned(label, draw.XCenter, draw.YTop), float64(width)/2, barTop+barHeight+22, unitText)
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// aligned is sty anchored at (xa, ya) of the text.
func aligned(sty text.Style, xa draw.XAlignment, ya draw.YAlignment) text.Style {
	sty.XAlign, sty.YAlign = xa, ya
	return sty
}

// luminance is col's relative luminance, 0 (black) to 1 (white), to pick
// the text colour that reads on it.
func luminance(col color.RGBA) float64 {
	lin := func(v uint8) float64 {
		c := float64(v) / 255
		if c <= 0.04045 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(col.R) + 0.7152*lin(col.G) + 0.0722*lin(col.B)
}
