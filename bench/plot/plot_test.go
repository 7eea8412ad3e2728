package plot

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// decode renders with f, decodes the PNG it wrote and checks that it is
// 1000 pixels wide, minH to maxH tall, and not all one colour: a white
// background with other colours on more than 2% of it.
func decode(t *testing.T, minH, maxH int, f func(*bytes.Buffer) error) (image.Image, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := f(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("output is not a PNG: %v", err)
	}
	size := img.Bounds().Size()
	if size.X != 1000 || size.Y < minH || size.Y > maxH {
		t.Errorf("size %v, want 1000 wide, %d..%d tall", size, minH, maxH)
	}
	if n, all := count(img, color.White), size.X*size.Y; n > all*98/100 || n < all/2 {
		t.Errorf("%d of %d pixels are white: want a white chart with something drawn on it", n, all)
	}
	return img, buf.Bytes()
}

func same(a, b color.Color) bool {
	r1, g1, b1, a1 := a.RGBA()
	r2, g2, b2, a2 := b.RGBA()
	return r1 == r2 && g1 == g2 && b1 == b2 && a1 == a2
}

// count returns how many pixels of img have colour col.
func count(img image.Image, col color.Color) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if same(img.At(x, y), col) {
				n++
			}
		}
	}
	return n
}

// runs returns, for each band of consecutive rows holding pixels of colour
// col, the most such pixels in one row of the band: the length of each
// horizontal bar of that colour, top to bottom.
func runs(img image.Image, col color.Color) []int {
	var out []int
	in := false
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		n := 0
		for x := b.Min.X; x < b.Max.X; x++ {
			if same(img.At(x, y), col) {
				n++
			}
		}
		switch {
		case n > 0 && !in:
			out = append(out, n)
		case n > 0:
			out[len(out)-1] = max(out[len(out)-1], n)
		}
		in = n > 0
	}
	return out
}

var latencies = []Series{
	{"warren", []float64{1.1, 1.3, 1.2, 1.8, 2.5, 1.4, 1.6, 9.5}},
	{"ssh -J b1 → sshd", []float64{2.1, 2.6, 3.3, 2.2, 2.9, 4.1, 3.0, 25}},
	{"ssh -J b1,b2 → sshd", []float64{3.5, 4.4, 5.1, 3.9, 6.2, 4.8, 5.5, 40}},
}

func TestCDF(t *testing.T) {
	for _, tc := range []struct {
		name   string
		series []Series
	}{
		{"log", latencies},
		{"linear", []Series{{"a", []float64{1, 2, 3, 4}}, {"b", []float64{2, 3, 5, 8}}}},
		{"non-positive falls back to linear", []Series{{"a", []float64{-5, 0, 0.01, 100}}, {"b", []float64{0, 1000}}}},
		{"single value", []Series{{"a", []float64{7}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := decode(t, 600, 600, func(b *bytes.Buffer) error { return CDF(b, "Latency", "ms", tc.series) })
			// A line rises the plot's full height, over 400 pixels (2
			// pixels thick, at least one of them fully covered); its
			// legend sample is about 40 pixels.
			for i := range tc.series {
				if n := count(img, palette[i]); n < 300 {
					t.Errorf("series %d colour %v: %d pixels, want a line through the plot", i, palette[i], n)
				}
			}
			if n := count(img, palette[len(tc.series)]); n != 0 {
				t.Errorf("unused colour %v painted %d pixels", palette[len(tc.series)], n)
			}
		})
	}
}

func TestBars(t *testing.T) {
	labels := []string{"direct", "warren → agent → sshd", "ssh -J bastion-one.example.internal,bastion-two.example.internal → sshd"}
	small := Series{"1 stream", []float64{100, 80, 50}}
	large := Series{"8 streams", []float64{900, 700, 400}}
	img, _ := decode(t, 360, 600, func(b *bytes.Buffer) error {
		return Bars(b, "Throughput", "MB/s", labels, []Series{small, large})
	})
	ns, nl := count(img, palette[0]), count(img, palette[1])
	if ns == 0 || nl <= ns {
		t.Errorf("larger series painted %d pixels, smaller %d: want more for larger", nl, ns)
	}

	// A single series: bars in label order, each as long as its value says.
	img, _ = decode(t, 360, 600, func(b *bytes.Buffer) error {
		return Bars(b, "Memory", "KiB", []string{"a", "b", "c"}, []Series{{"rss", []float64{10, 40, 20}}})
	})
	r := runs(img, palette[0])
	if len(r) != 3 {
		t.Fatalf("found %d bars of the series colour, want 3 (no legend for one series)", len(r))
	}
	if !(r[1] > r[2] && r[2] > r[0]) {
		t.Errorf("bar lengths %v for values 10, 40, 20", r)
	}
	if d := float64(r[1]) / float64(r[0]); math.Abs(d-4) > 0.1 {
		t.Errorf("bar for 40 is %.2f times the bar for 10, want 4", d)
	}

	// Negative values extend the axis below 0.
	img, _ = decode(t, 360, 600, func(b *bytes.Buffer) error {
		return Bars(b, "Delta", "%", []string{"a", "b"}, []Series{{"d", []float64{-30, 10}}})
	})
	if r := runs(img, palette[0]); len(r) != 2 || math.Abs(float64(r[0])/float64(r[1])-3) > 0.1 {
		t.Errorf("bar lengths %v for values -30, 10", r)
	}

	// Many labels: the chart grows taller and every bar still shows.
	many := make([]string, 40)
	vals := make([]float64, 40)
	for i := range many {
		many[i], vals[i] = fmt.Sprintf("label %d", i), float64(i+1)
	}
	img, _ = decode(t, 601, 4000, func(b *bytes.Buffer) error {
		return Bars(b, "Many", "s", many, []Series{{"v", vals}})
	})
	if r := runs(img, palette[0]); len(r) != 40 || !slices.IsSorted(r) {
		t.Errorf("bar lengths %v for values 1..40", r)
	}
}

func TestDeterministic(t *testing.T) {
	_, a := decode(t, 600, 600, func(b *bytes.Buffer) error { return CDF(b, "t", "ms", latencies) })
	_, b := decode(t, 600, 600, func(b *bytes.Buffer) error { return CDF(b, "t", "ms", latencies) })
	if !bytes.Equal(a, b) {
		t.Error("CDF output differs between runs")
	}
	bars := func(b *bytes.Buffer) error {
		return Bars(b, "t", "ms", []string{"x", "y"}, []Series{{"a", []float64{1, 2}}, {"b", []float64{3, 4}}})
	}
	_, a = decode(t, 360, 600, bars)
	_, b = decode(t, 360, 600, bars)
	if !bytes.Equal(a, b) {
		t.Error("Bars output differs between runs")
	}
}

func TestBadInput(t *testing.T) {
	ok := []float64{1, 2}
	for _, tc := range []struct {
		name   string
		labels []string // nil: test CDF
		series []Series
	}{
		{"cdf no series", nil, nil},
		{"cdf empty series", nil, []Series{{"a", ok}, {"b", nil}}},
		{"cdf NaN", nil, []Series{{"a", []float64{1, math.NaN()}}}},
		{"cdf +Inf", nil, []Series{{"a", []float64{math.Inf(1)}}}},
		{"cdf -Inf", nil, []Series{{"a", []float64{math.Inf(-1), 1}}}},
		{"cdf span overflows", nil, []Series{{"a", []float64{-math.MaxFloat64, math.MaxFloat64}}}},
		{"bars span overflows", []string{"x", "y"}, []Series{{"a", []float64{-1e308, 1e308}}}},
		{"bars no labels", []string{}, []Series{{"a", nil}}},
		{"bars no series", []string{"x", "y"}, nil},
		{"bars empty series", []string{"x", "y"}, []Series{{"a", nil}}},
		{"bars too few values", []string{"x", "y"}, []Series{{"a", ok}, {"b", []float64{1}}}},
		{"bars too many values", []string{"x", "y"}, []Series{{"a", []float64{1, 2, 3}}}},
		{"bars NaN", []string{"x", "y"}, []Series{{"a", []float64{math.NaN(), 1}}}},
		{"bars Inf", []string{"x", "y"}, []Series{{"a", []float64{1, math.Inf(1)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			var err error
			if tc.labels == nil {
				err = CDF(&buf, "t", "ms", tc.series)
			} else {
				err = Bars(&buf, "t", "ms", tc.labels, tc.series)
			}
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes despite the error", buf.Len())
			}
		})
	}
}

func TestLines(t *testing.T) {
	xs := []float64{-10, -5, 0, 5, 10, 15}
	series := []Series{{"us", []float64{800, 800, 800, 1200, 1200, 800}}, {"eu", []float64{800, 800, 0, 0, 400, 800}}}
	img, _ := decode(t, height, height, func(b *bytes.Buffer) error { return Lines(b, "tunnels per region", "s", "tunnels", xs, series) })
	for i := range series {
		if n := count(img, colour(i)); n < 100 {
			t.Errorf("series %d: got %d pixels of its colour, want a line", i, n)
		}
	}
	for _, tc := range []struct {
		name   string
		xs     []float64
		series []Series
	}{
		{"one x", []float64{1}, []Series{{"a", []float64{1}}}},
		{"descending", []float64{2, 1}, []Series{{"a", []float64{1, 2}}}},
		{"no series", xs, nil},
		{"too few values", xs, []Series{{"a", []float64{1}}}},
		{"NaN", []float64{1, 2}, []Series{{"a", []float64{1, math.NaN()}}}},
	} {
		var buf bytes.Buffer
		if err := Lines(&buf, "t", "s", "n", tc.xs, tc.series); err == nil || buf.Len() != 0 {
			t.Errorf("%s: got %v and %d bytes, want an error and nothing written", tc.name, err, buf.Len())
		}
	}
}

func TestCompact(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		sig  int
		want string
	}{
		{0, 3, "0"},
		{0.5, 3, "0.5"},
		{12, 3, "12"},
		{1200, 3, "1.2k"},
		{1234.5, 3, "1.23k"},
		{999.9, 3, "1k"},
		{3e6, 3, "3M"},
		{-2.5e9, 3, "-2.5G"},
		{0.30000000000000004, 4, "0.3"},
		{0.0001234, 3, "0.000123"},
		{1000200, 5, "1.0002M"},
	} {
		if got := compact(tc.v, tc.sig); got != tc.want {
			t.Errorf("compact(%v, %d) = %q, want %q", tc.v, tc.sig, got, tc.want)
		}
	}
}

func TestLinearTicks(t *testing.T) {
	labels := func(lo, hi float64, n int) string {
		var got []string
		for _, tk := range (linearTicks{n}).Ticks(lo, hi) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		return strings.Join(got, " ")
	}
	for _, tc := range []struct {
		lo, hi float64
		n      int
		want   string
	}{
		{0, 1, 7, "0 0.2 0.4 0.6 0.8 1"},
		{130, 1420, 8, "0 200 400 600 800 1k 1.2k 1.4k 1.6k"},
		{-30, 10, 8, "-30 -25 -20 -15 -10 -5 0 5 10"},
		{1000000, 1000400, 4, "1M 1.0001M 1.0002M 1.0003M 1.0004M"},
		{0, 1.7e308, 8, "0 5e+307 1e+308 1.5e+308"}, // not 2e+308, which overflows
	} {
		if got := labels(tc.lo, tc.hi, tc.n); got != tc.want {
			t.Errorf("ticks for %v..%v: %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

func TestLogTicks(t *testing.T) {
	labels := func(lo, hi float64) string {
		var got []string
		for _, tk := range (logTicks{}).Ticks(lo, hi) {
			if tk.Value < lo || tk.Value > hi {
				t.Errorf("tick %v outside %v..%v", tk.Value, lo, hi)
			}
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		return strings.Join(got, " ")
	}
	if got, want := labels(0.43, 63), "0.5 1 2 5 10 20 50"; got != want {
		t.Errorf("log ticks for 0.43..63: %q, want %q", got, want)
	}
	if got, want := labels(3, 2e6), "10 100 1k 10k 100k 1M"; got != want {
		t.Errorf("log ticks for 3..2e6: %q, want %q", got, want)
	}
}

func TestWrap(t *testing.T) {
	sty := style(10)
	w := pixels(140)
	long := "ssh -J bastion-one.example.internal,bastion-two.example.internal → sshd"
	got := wrap(long, w, sty)
	for l := range strings.SplitSeq(got, "\n") {
		if sty.Width(l) > w {
			t.Errorf("line %q wider than %v", l, w)
		}
	}
	if strings.Count(got, "\n") < 2 || strings.ReplaceAll(strings.ReplaceAll(got, "\n", ""), " ", "") != strings.ReplaceAll(long, " ", "") {
		t.Errorf("wrap(%q) = %q: want it on three lines or more, nothing lost", long, got)
	}
	if got := wrap("", w, sty); got != "" {
		t.Errorf("wrap of empty label: %q", got)
	}
	if got := wrap("short label", w, sty); got != "short label" {
		t.Errorf("wrap of a short label: %q", got)
	}
}

// TestSamples writes one chart of each kind for a person to look at, into
// the directory $PLOT_SAMPLES if it is set.
func TestSamples(t *testing.T) {
	dir := os.Getenv("PLOT_SAMPLES")
	if dir == "" {
		dir = t.TempDir()
	}
	var cdf, bars bytes.Buffer
	if err := CDF(&cdf, "Session setup latency", "ms", latencies); err != nil {
		t.Fatal(err)
	}
	labels := []string{"direct → sshd", "warren → agent → sshd", "ssh -J b1 → sshd", "ssh -J b1,b2 → sshd"}
	if err := Bars(&bars, "Bulk copy throughput", "MB/s", labels, []Series{
		{"1 stream", []float64{412, 365.5, 298, 201}},
		{"8 streams", []float64{1530, 1204, 880, 612}},
	}); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cdf.png": cdf.Bytes(), "bars.png": bars.Bytes()} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("wrote", p)
	}
}
