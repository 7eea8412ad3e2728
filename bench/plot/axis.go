package plot

import (
	"errors"
	"math"
	"strconv"
)

// axis maps values onto a pixel range. For a log axis lo, hi and the tick
// positions are log10 of the value.
type axis struct {
	log    bool
	lo, hi float64
	ticks  []tick
	minor  []float64 // unlabelled grid lines, in axis space
}

type tick struct {
	pos   float64 // in axis space
	label string
}

// frac returns where v falls on the axis: 0 at lo, 1 at hi.
func (a axis) frac(v float64) float64 {
	if a.log {
		v = math.Log10(v)
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// pix maps v onto the pixel range [p0, p1].
func (a axis) pix(v float64, p0, p1 int) int {
	return p0 + int(math.Round(a.frac(v)*float64(p1-p0)))
}

// tickPix maps a position in axis space onto the pixel range [p0, p1].
func (a axis) tickPix(pos float64, p0, p1 int) int {
	return p0 + int(math.Round((pos-a.lo)/(a.hi-a.lo)*float64(p1-p0)))
}

// niceStep returns the smallest step of 1, 2 or 5 × 10^k that covers span
// in at most n steps.
func niceStep(span float64, n int) float64 {
	raw := span / float64(max(n, 1))
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw*(1-1e-9) {
			return m * mag
		}
	}
	return 10 * mag
}

// linearAxis returns an axis covering [lo, hi], rounded out to a nice step,
// with about n ticks at most.
func linearAxis(lo, hi float64, n int) (axis, error) {
	if hi <= lo {
		pad := math.Abs(lo) / 10
		if pad == 0 {
			pad = 1
		}
		lo, hi = lo-pad, hi+pad
	}
	step := niceStep(hi-lo, n)
	k0, k1 := math.Floor(lo/step), math.Ceil(hi/step)
	a := axis{lo: k0 * step, hi: k1 * step}
	if math.IsInf(a.hi-a.lo, 0) || math.IsNaN(a.hi-a.lo) {
		return axis{}, errors.New("plot: values span too wide a range to draw")
	}
	// Enough significant digits to tell neighbouring ticks apart.
	sig := int(math.Floor(math.Log10(max(math.Abs(a.lo), math.Abs(a.hi))))-math.Floor(math.Log10(step))) + 1
	sig = min(max(sig, 1), 15)
	for i := 0; i <= 1000 && k0+float64(i) <= k1; i++ {
		k := k0 + float64(i)
		a.ticks = append(a.ticks, tick{k * step, compact(k*step, sig)})
	}
	return a, nil
}

// logAxis returns a log10 axis over [lo, hi] (0 < lo < hi), widened to
// the nearest 1, 2 or 5 × 10^k, for a pixel length of px. Ticks are at 1, 2
// and 5 × 10^k when decades are wide, else at powers of ten only (every
// few decades if there are many).
func logAxis(lo, hi float64, px int) axis {
	a := axis{log: true, lo: niceLog(lo, false), hi: niceLog(hi, true)}
	perDecade := float64(px) / (a.hi - a.lo)
	every := max(1, int(math.Ceil(50/perDecade))) // label every nth decade
	for d := math.Floor(a.lo); d <= a.hi; d++ {
		for m := 1.0; m < 10; m++ {
			pos := d + math.Log10(m)
			if pos < a.lo-1e-9 || pos > a.hi+1e-9 {
				continue
			}
			labelled := (m == 1 && int(d)%every == 0) || (perDecade >= 150 && (m == 2 || m == 5))
			switch {
			case labelled:
				a.ticks = append(a.ticks, tick{pos, compact(m*math.Pow(10, d), 1)})
			case m == 1 || perDecade >= 80:
				a.minor = append(a.minor, pos)
			}
		}
	}
	return a
}

// niceLog returns log10 of the nearest 1, 2 or 5 × 10^k at or below v
// (at or above it if up).
func niceLog(v float64, up bool) float64 {
	d := math.Floor(math.Log10(v))
	ms := []float64{5, 2, 1}
	if up {
		ms = []float64{1, 2, 5, 10}
	}
	for _, m := range ms {
		p := m * math.Pow(10, d)
		if (!up && p <= v*(1+1e-12)) || (up && p >= v*(1-1e-12)) {
			return d + math.Log10(m)
		}
	}
	return d
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
