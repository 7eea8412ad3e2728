package logsample

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

const waitFor = 10 * time.Second

// logBuf is a log a test reads back, safe for the sampler's timers.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the lines holding s.
func (b *logBuf) lines(s string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func captureLog() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// TestSampledLog checks that a burst is logged as its first event at once
// and one summary per interval, and that Close flushes what is pending.
func TestSampledLog(t *testing.T) {
	logger, logs := captureLog()
	l := New(logger, "refused", time.Hour)
	for i := range 1000 {
		l.Event("n", i)
	}
	if got := logs.lines("refused"); len(got) != 1 || !strings.Contains(got[0], "n=0") {
		t.Fatalf("after a burst: %q, want just the first event", got)
	}
	l.Stop()
	got := logs.lines("refused")
	if len(got) != 2 || !strings.Contains(got[1], "n=999") || !strings.Contains(got[1], "suppressed=999") {
		t.Fatalf("after stop: %q, want a summary of 999 with the latest", got)
	}
	l.Event("n", "late")
	if n := len(logs.lines("refused")); n != 2 {
		t.Errorf("an event after stop was logged")
	}

	// With a short interval, a burst ends after a quiet one and the next
	// event is logged at once again.
	logger, logs = captureLog()
	l = New(logger, "refused", 20*time.Millisecond)
	defer l.Stop()
	l.Event("n", 1)
	l.Event("n", 2)
	deadline := time.Now().Add(waitFor)
	for len(logs.lines("suppressed=1")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no summary: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		l.mu.Lock()
		ended := l.timer == nil
		l.mu.Unlock()
		if ended {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the burst never ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Event("n", 3)
	if got := logs.lines("n=3"); len(got) != 1 || strings.Contains(got[0], "suppressed") {
		t.Errorf("first event of a new burst: %q, want it logged at once", got)
	}
}
