package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
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
	white = color.RGBA{0xff, 0xff, 0xff, 0xff}
	ink   = color.RGBA{0x33, 0x33, 0x33, 0xff} // text and axes
	light = color.RGBA{0xe2, 0xe2, 0xe2, 0xff} // grid lines
	faint = color.RGBA{0xf2, 0xf2, 0xf2, 0xff} // minor grid lines
)

func colour(i int) color.RGBA { return palette[i%len(palette)] }

// The font is the 7x13 bitmap font: every glyph advances 7 pixels.
const (
	glyphW = 7
	glyphH = 13
)

type canvas struct{ *image.RGBA }

func newCanvas(w, h int) canvas {
	c := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	draw.Draw(c.RGBA, c.Bounds(), image.NewUniform(white), image.Point{}, draw.Src)
	return c
}

// rect fills the rectangle with corners (x0, y0) and (x1, y1), exclusive of
// x1 and y1, in either order.
func (c canvas) rect(x0, y0, x1, y1 int, col color.RGBA) {
	r := image.Rect(x0, y0, x1, y1).Intersect(c.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.SetRGBA(x, y, col)
		}
	}
}

// hline and vline draw 1 px lines including both end points.
func (c canvas) hline(x0, x1, y int, col color.RGBA) { c.rect(x0, y, x1+1, y+1, col) }
func (c canvas) vline(x, y0, y1 int, col color.RGBA) { c.rect(x, y0, x+1, y1+1, col) }

// thickH and thickV draw 2 px lines through the given points.
func (c canvas) thickH(x0, x1, y int, col color.RGBA) {
	c.rect(min(x0, x1)-1, y-1, max(x0, x1)+1, y+1, col)
}
func (c canvas) thickV(x, y0, y1 int, col color.RGBA) {
	c.rect(x-1, min(y0, y1)-1, x+1, max(y0, y1)+1, col)
}

// ascii replaces what the bitmap font cannot draw: common symbols by ASCII
// look-alikes, anything else by '?'.
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= ' ' && r <= '~':
			b.WriteRune(r)
		case r == '→':
			b.WriteString("->")
		case r == '←':
			b.WriteString("<-")
		case r == '×':
			b.WriteString("x")
		case r == 'µ' || r == 'μ':
			b.WriteString("u")
		case r == '…':
			b.WriteString("...")
		case r == '–' || r == '—' || r == '−':
			b.WriteString("-")
		case r == '≤':
			b.WriteString("<=")
		case r == '≥':
			b.WriteString(">=")
		case r == '‘' || r == '’':
			b.WriteString("'")
		case r == '“' || r == '”':
			b.WriteString(`"`)
		case r == '\t' || r == '\u00a0':
			b.WriteString(" ")
		default:
			b.WriteString("?")
		}
	}
	return b.String()
}

// textW is the width in pixels of s drawn at scale 1.
func textW(s string) int { return len(ascii(s)) * glyphW }

// truncate shortens s to at most w pixels at scale 1, ending in "...".
func truncate(s string, w int) string {
	s = ascii(s)
	n := max(w/glyphW, 3)
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// wrap breaks s into lines of at most w pixels at scale 1, at spaces where
// it can and inside words where it must.
func wrap(s string, w int) []string {
	n := max(w/glyphW, 1)
	var lines []string
	cur := ""
	for _, word := range strings.Fields(ascii(s)) {
		if cur != "" && len(cur)+1+len(word) <= n {
			cur += " " + word
			continue
		}
		if cur != "" {
			lines = append(lines, cur)
		}
		for len(word) > n { // break after punctuation if possible
			cut := n
			if i := strings.LastIndexAny(word[:n], ",/-.:;"); i > 0 {
				cut = i + 1
			}
			lines = append(lines, word[:cut])
			word = word[cut:]
		}
		cur = word
	}
	return append(lines, cur)
}

// text draws s with its top left corner at (x, y), each font pixel scale
// pixels wide. A vertical text reads bottom to top, with (x, y) the top left
// corner of its bounding box.
func (c canvas) text(s string, x, y, scale int, vertical bool, col color.RGBA) {
	s = ascii(s)
	w := len(s) * glyphW
	if w == 0 {
		return
	}
	mask := image.NewAlpha(image.Rect(0, 0, w, glyphH))
	d := font.Drawer{Dst: mask, Src: image.Opaque, Face: basicfont.Face7x13, Dot: fixed.P(0, basicfont.Face7x13.Ascent)}
	d.DrawString(s)
	for my := 0; my < glyphH; my++ {
		for mx := 0; mx < w; mx++ {
			if mask.AlphaAt(mx, my).A < 0x80 {
				continue
			}
			px, py := mx, my
			if vertical {
				px, py = my, w-1-mx
			}
			c.rect(x+px*scale, y+py*scale, x+(px+1)*scale, y+(py+1)*scale, col)
		}
	}
}

// header draws the title centred at the top and, below it, a legend of
// coloured boxes and names between x = left and x = right, wrapping onto
// more rows as needed. It returns the y just below what it drew. With a
// zero canvas it only measures.
func header(c canvas, title string, names []string, left, right, width int) int {
	y := 12
	if title != "" {
		scale := 2
		if textW(title)*2 > width-24 {
			scale = 1
		}
		t := truncate(title, (width-24)/scale)
		if c.RGBA != nil {
			c.text(t, (width-textW(t)*scale)/2, y, scale, false, ink)
		}
		y += glyphH*scale + 12
	}
	if len(names) == 0 {
		return y
	}
	x := left
	for i, name := range names {
		if name == "" {
			name = fmt.Sprintf("series %d", i+1)
		}
		name = truncate(name, right-left-18)
		w := 18 + textW(name)
		if x > left && x+w > right {
			x, y = left, y+20
		}
		if c.RGBA != nil {
			c.rect(x, y, x+12, y+12, colour(i))
			c.text(name, x+18, y, 1, false, ink)
		}
		x += w + 24
	}
	return y + 20
}
