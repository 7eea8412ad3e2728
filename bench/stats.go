package bench

import (
	"fmt"
	"slices"
	"time"
)

// Durations is a set of samples.
type Durations []time.Duration

// Quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method;
// zero for no samples.
func (d Durations) Quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Median is the 0.5 quantile.
func (d Durations) Median() time.Duration { return d.Quantile(0.5) }

// Millis returns the samples in milliseconds, for plots.
func (d Durations) Millis() []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v) / float64(time.Millisecond)
	}
	return out
}

// Micros returns the samples in microseconds, for plots.
func (d Durations) Micros() []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v) / float64(time.Microsecond)
	}
	return out
}

// ms formats a duration in milliseconds with sensible precision.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

// us formats a duration in microseconds.
func us(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// mibps formats a rate of bytes per second in MiB/s.
func mibps(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return rateMiB(float64(bytes) / d.Seconds())
}

// rateMiB formats bytes per second in MiB/s, with two significant digits
// below 10 MiB/s: a slow path (a starved emulator, a window across an
// ocean) shows as 0.31 MiB/s, not as 0.
func rateMiB(perSec float64) string {
	v := perSec / (1 << 20)
	switch {
	case v >= 10:
		return fmt.Sprintf("%.0f MiB/s", v)
	case v >= 1:
		return fmt.Sprintf("%.1f MiB/s", v)
	}
	return fmt.Sprintf("%.2f MiB/s", v)
}
