package plot

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// regionsRTT is a keystroke matrix like the regions benchmark's: users'
// regions by rows, nodes' by columns, in ms.
var regionsRTT = []Matrix{
	{"Warren, nearest proxy", [][]float64{{1.2, 81, 121}, {81, 1.3, 181}, {121, 181, 1.1}}},
	{"Warren, every user via us", [][]float64{{1.2, 81, 121}, {81, 161, 201}, {121, 201, 241}}},
	{"ssh -J bastion", [][]float64{{1.5, 82, 122}, {82, 1.6, 182}, {122, 182, 1.4}}},
	{"network", [][]float64{{1, 80, 120}, {80, 1, 180}, {120, 180, 1}}},
}

func TestHeatMaps(t *testing.T) {
	rows, cols := []string{"user us", "user eu", "user ap"}, []string{"us", "eu", "ap"}
	for _, tc := range []struct {
		name       string
		maps       []Matrix
		minH, maxH int
	}{
		{"log, two rows of panels", regionsRTT, 450, 650},
		{"linear, one panel", []Matrix{{"MiB/s", [][]float64{{5, 10, 20}, {30, 40, 50}, {6, 7, 8}}}}, 250, 350},
		{"all equal", []Matrix{{"same", [][]float64{{3, 3, 3}, {3, 3, 3}, {3, 3, 3}}}}, 250, 350},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, png := decode(t, tc.minH, tc.maxH, func(b *bytes.Buffer) error {
				return HeatMaps(b, "Keystroke round trip, p50", "ms", rows, cols, tc.maps)
			})
			if dir := os.Getenv("WARREN_PLOT_DIR"); dir != "" {
				os.WriteFile(filepath.Join(dir, "heatmap-"+tc.name+".png"), png, 0o644)
			}
			// Every cell is a block of its colour, a cell 38 pixels tall
			// and at least 38 wide, less its label: the lowest value is
			// the ramp's first colour, the highest its last.
			lo, hi := ramp[0], ramp[len(ramp)-1]
			if tc.name == "all equal" {
				lo, hi = shade(0.5), shade(0.5)
			}
			for _, c := range []struct {
				name string
				col  any
			}{{"lowest", lo}, {"highest", hi}} {
				if n := count(img, c.col.(interface{ RGBA() (r, g, b, a uint32) })); n < 38*38/2 {
					t.Errorf("%s value's colour %v: %d pixels, want a cell of it", c.name, c.col, n)
				}
			}
		})
	}
	_, a := decode(t, 450, 650, func(b *bytes.Buffer) error { return HeatMaps(b, "t", "ms", rows, cols, regionsRTT) })
	_, b := decode(t, 450, 650, func(b *bytes.Buffer) error { return HeatMaps(b, "t", "ms", rows, cols, regionsRTT) })
	if !bytes.Equal(a, b) {
		t.Error("HeatMaps output differs between runs")
	}
}

func TestHeatMapsBadInput(t *testing.T) {
	rows, cols := []string{"a", "b"}, []string{"x", "y"}
	good := [][]float64{{1, 2}, {3, 4}}
	for _, tc := range []struct {
		name       string
		rows, cols []string
		maps       []Matrix
	}{
		{"no rows", nil, cols, []Matrix{{"m", nil}}},
		{"no columns", rows, nil, []Matrix{{"m", [][]float64{{}, {}}}}},
		{"no matrices", rows, cols, nil},
		{"too few rows", rows, cols, []Matrix{{"m", good}, {"n", [][]float64{{1, 2}}}}},
		{"short row", rows, cols, []Matrix{{"m", [][]float64{{1, 2}, {3}}}}},
		{"NaN", rows, cols, []Matrix{{"m", [][]float64{{1, math.NaN()}, {3, 4}}}}},
		{"Inf", rows, cols, []Matrix{{"m", [][]float64{{1, 2}, {math.Inf(1), 4}}}}},
		{"span overflows", rows, cols, []Matrix{{"m", [][]float64{{-1e308, 1e308}, {3, 4}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := HeatMaps(&buf, "t", "ms", tc.rows, tc.cols, tc.maps)
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

func TestShade(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		want any
	}{{-1, ramp[0]}, {0, ramp[0]}, {0.25, ramp[1]}, {0.5, ramp[2]}, {1, ramp[4]}, {2, ramp[4]}} {
		if got := shade(tc.f); got != tc.want {
			t.Errorf("shade(%g) = %v, want %v", tc.f, got, tc.want)
		}
	}
}
