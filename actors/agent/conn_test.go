package agent

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// The reconnect wait doubles from ReconnectMin up to ReconnectMax, with
// jitter in its upper half only, and never overflows into a zero or
// negative wait however many attempts failed.
func TestBackoffGrowsWithinBounds(t *testing.T) {
	lo, hi := 50*time.Millisecond, time.Second
	for n := range 80 {
		ceil := hi
		if n < 16 && lo<<n < hi {
			ceil = lo << n
		}
		for range 200 {
			if d := backoff(lo, hi, n); d < ceil/2 || d > ceil {
				t.Fatalf("attempt %d: wait %s, want within [%s, %s]", n, d, ceil/2, ceil)
			}
		}
	}
}

// A slot waiting to reconnect wakes at the end of its wait, at once when
// the proxy set changes (a proxy joined or left), and gives up when the
// agent stops.
func TestWaitChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !waitChange(t.Context(), make(chan struct{}), 3*time.Second) {
			t.Fatal("a full wait reported the agent stopping")
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("a full wait took %s, want 3s", d)
		}

		changed := make(chan struct{})
		time.AfterFunc(time.Second, func() { close(changed) })
		start = time.Now()
		if !waitChange(t.Context(), changed, time.Minute) {
			t.Fatal("a proxy set change reported the agent stopping")
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("a proxy set change after 1s ended the wait after %s", d)
		}

		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(2*time.Second, cancel)
		start = time.Now()
		if waitChange(ctx, make(chan struct{}), time.Minute) {
			t.Fatal("a stopping agent kept its slot waiting to reconnect")
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("stopping after 2s ended the wait after %s", d)
		}
	})
}
