package plot

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	gonum "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// palette is the Okabe–Ito colour-blind friendly palette, in the order
// series get their colours (repeating after eight series).
var palette = []color.RGBA{
	{0x00, 0x72, 0xB2, 0xff}, // blue
	{0xE6, 0x9F, 0x00, 0xff}, // orange
	{0x00, 0x9E, 0x73, 0xff}, // bluish green
	{0xD5, 0x5E, 0x00, 0xff}, // vermillion
	{0xCC, 0x79, 0xA7, 0xff}, // reddish purple
	{0x56, 0xB4, 0xE9, 0xff}, // sky blue
	{0xF0, 0xE4, 0x42, 0xff}, // yellow
	{0x00, 0x00, 0x00, 0xff}, // black
}

var (
	ink  = color.RGBA{0x33, 0x33, 0x33, 0xff} // text and axes
	grid = color.RGBA{0xdd, 0xdd, 0xdd, 0xff} // grid lines
)

func colour(i int) color.RGBA { return palette[i%len(palette)] }

// Images are drawn at 96 dots per inch; lengths in gonum are in points
// (1/72 inch), so a pixel is 0.75 points.
const dpi = 96

func pixels(n int) vg.Length { return vg.Length(n) * vg.Inch / dpi }

// style returns text in Liberation Sans of the given size, in ink.
func style(size vg.Length) text.Style {
	return text.Style{
		Color:   ink,
		Font:    font.Font{Typeface: "Liberation", Variant: "Sans", Size: size},
		Handler: gonum.DefaultTextHandler,
	}
}

// newPlot returns a plot without a title (the header draws it) whose text
// is all in Liberation Sans, with light grid lines at the major ticks of
// the x axis (and of the y axis if yGrid), and the x axis labelled with
// unit ("value" if there is none).
func newPlot(unit string, yGrid bool) *gonum.Plot {
	p := gonum.New()
	for _, a := range []*gonum.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = style(12).Font
		a.Label.TextStyle.Color = ink
		a.Tick.Label.Font = style(10).Font
		a.Tick.Label.Color = ink
		a.Color, a.Tick.Color = ink, ink
		a.Tick.Length = vg.Points(4)
	}
	p.X.Label.Text = unit
	if unit == "" {
		p.X.Label.Text = "value"
	}
	g := &plotter.Grid{Vertical: draw.LineStyle{Color: grid, Width: vg.Points(0.75)}}
	if yGrid {
		g.Horizontal = g.Vertical
	}
	p.Add(g)
	return p
}

// entry is one line of a legend: a series' name and a sample of how it is
// drawn.
type entry struct {
	name  string
	thumb gonum.Thumbnailer
}

// header is what a chart has above its plot: the title, centred, and the
// legend in as many columns as fit, filled row by row.
type header struct {
	title   string
	sty     text.Style
	columns []gonum.Legend
	colW    vg.Length
}

const margin = 12 // pixels around the chart and between its parts

// newHeader lays out title and legend over width w.
func newHeader(title string, legend []entry, w vg.Length) header {
	h := header{title: title, sty: style(16)}
	h.sty.XAlign, h.sty.YAlign = draw.XCenter, draw.YTop
	if tw := h.sty.Width(title); tw > w {
		h.sty.Font.Size = max(9, h.sty.Font.Size*w/tw)
	}
	if len(legend) == 0 {
		return h
	}
	l := gonum.NewLegend()
	l.TextStyle = style(10)
	l.Top, l.Left = true, true
	l.ThumbnailWidth = vg.Points(16)
	l.Padding = vg.Points(3)
	widest := vg.Length(0)
	for _, e := range legend {
		widest = max(widest, l.ThumbnailWidth+l.TextStyle.Width(" "+e.name))
	}
	h.colW = widest + pixels(24)
	n := max(1, min(len(legend), int(w/h.colW)))
	h.columns = make([]gonum.Legend, n)
	for i := range h.columns {
		h.columns[i] = l
	}
	for i, e := range legend {
		h.columns[i%n].Add(e.name, e.thumb)
	}
	return h
}

// height is how much room the header takes, the margin below it included.
func (h header) height() vg.Length {
	y := vg.Length(0)
	if h.title != "" {
		y += h.sty.Height(h.title) + pixels(margin)
	}
	if len(h.columns) > 0 {
		y += h.columns[0].Rectangle(draw.Canvas{}).Size().Y + pixels(margin)
	}
	return y
}

// draw draws the header at the top of c and returns the part of c below it.
func (h header) draw(c draw.Canvas) draw.Canvas {
	top := c.Max.Y
	if h.title != "" {
		c.FillText(h.sty, vg.Point{X: c.Center().X, Y: top}, h.title)
		top -= h.sty.Height(h.title) + pixels(margin)
	}
	for i := range h.columns {
		h.columns[i].Draw(draw.Crop(c, vg.Length(i)*h.colW, 0, 0, top-c.Max.Y))
	}
	c.Max.Y -= h.height()
	return c
}

// render draws h and then p below it on a white image 1000 pixels wide and
// px tall, and writes it to w as a PNG. Gonum panics on some input that
// check lets through; render returns that as an error.
func render(w io.Writer, h header, p *gonum.Plot, px int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot: %v", r)
		}
	}()
	img := vgimg.NewWith(vgimg.UseWH(pixels(width), pixels(px)), vgimg.UseDPI(dpi))
	m := pixels(margin)
	c := draw.Crop(draw.New(img), m, -m, m/2, -m)
	p.Draw(h.draw(c))
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// linearTicks is a gonum.Ticker for a linear axis: labelled ticks every
// 1, 2 or 5 × 10^k, the smallest such step that needs no more than n
// steps, from the step at or below the smallest value to the step at or
// above the largest (so that an axis with AutoRescale starts and ends on a
// labelled tick), and unlabelled ones halfway between. Ticks that would
// overflow to ±Inf are left out.
type linearTicks struct{ n int }

func (t linearTicks) Ticks(lo, hi float64) []gonum.Tick {
	raw := (hi - lo) / float64(max(t.n, 1))
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw*(1-1e-9) {
			step *= m
			break
		}
	}
	// Enough significant digits to tell neighbouring ticks apart.
	sig := int(math.Floor(math.Log10(max(math.Abs(lo), math.Abs(hi))))-math.Floor(math.Log10(step))) + 1
	sig = min(max(sig, 1), 15)
	var ts []gonum.Tick
	for k := math.Floor(lo/step + 1e-9); k <= math.Ceil(hi/step-1e-9) && len(ts) < 4*t.n; k++ {
		if v := k * step; !math.IsInf(v, 0) {
			if len(ts) > 0 {
				ts = append(ts, gonum.Tick{Value: v - step/2})
			}
			ts = append(ts, gonum.Tick{Value: v, Label: compact(v, sig)})
		}
	}
	return ts
}

// logTicks is a gonum.Ticker for a log10 axis: it marks 1, 2 … 9 × 10^k
// and labels the powers of ten, and 2 and 5 × 10^k too when the axis
// spans no more than four decades.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []gonum.Tick {
	few := hi/lo <= 1e4
	var ts []gonum.Tick
	for d := math.Floor(math.Log10(lo)); d <= math.Ceil(math.Log10(hi)); d++ {
		for m := 1.0; m < 10; m++ {
			v := m * math.Pow(10, d)
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := gonum.Tick{Value: v}
			if m == 1 || few && (m == 2 || m == 5) {
				t.Label = compact(v, 1)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// nice returns the nearest 1, 2 or 5 × 10^k at or below v > 0 (at or
// above it if up): where a log axis over v starts or ends.
func nice(v float64, up bool) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	if up {
		for _, m := range []float64{1, 2, 5} {
			if m*p >= v*(1-1e-12) {
				return m * p
			}
		}
		return 10 * p
	}
	for _, m := range []float64{5, 2, 1} {
		if m*p <= v*(1+1e-12) {
			return m * p
		}
	}
	return p
}

// compact formats v with at most sig significant digits and a k/M/G/T
// suffix for large magnitudes: 0.5, 12, 1.2k, 3M.
func compact(v float64, sig int) string {
	if v == 0 {
		return "0"
	}
	// Round first so that 999.9 becomes 1k, not 1000.
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', sig, 64), 64)
	a := math.Abs(v)
	if a < 1e-3 || a >= 1e15 {
		return strconv.FormatFloat(v, 'g', sig, 64)
	}
	suffix := ""
	for _, s := range []struct {
		div float64
		sfx string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if a >= s.div {
			v, suffix = v/s.div, s.sfx
			break
		}
	}
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', sig, 64), 64)
	return strconv.FormatFloat(v, 'f', -1, 64) + suffix
}

// wrap breaks s into lines, joined by "\n", no wider than w in sty: at
// spaces where it can, inside a word (after punctuation if possible) where
// it must.
func wrap(s string, w vg.Length, sty text.Style) string {
	var lines []string
	cur := ""
	for _, word := range strings.Fields(s) {
		if cur != "" && sty.Width(cur+" "+word) <= w {
			cur += " " + word
			continue
		}
		if cur != "" {
			lines = append(lines, cur)
		}
		for sty.Width(word) > w {
			cut, punct := 0, 0 // longest prefix that fits, at least one rune
			for i, r := range word {
				end := i + utf8.RuneLen(r)
				if cut > 0 && sty.Width(word[:end]) > w {
					break
				}
				cut = end
				if strings.ContainsRune(",/-.:;", r) {
					punct = end
				}
			}
			if punct > 0 && punct < len(word) {
				cut = punct
			}
			lines = append(lines, word[:cut])
			word = word[cut:]
		}
		cur = word
	}
	return strings.Join(append(lines, cur), "\n")
}
