package agent

import (
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)

func jittered(r *rand.Rand, base, jitter time.Duration) time.Duration {
	return base - jitter + time.Duration(r.Int64N(int64(2*jitter)+1))
}

// Two proxies of the agent's region 2 ms apart, measured every 25 s with
// ±5 ms of jitter for an hour: the home never moves.
func TestHomeStaysUnderJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := newHomes("us", defaultHomeRule)
	proxies := []homeProxy{{"p1", "us", "a"}, {"p2", "us", "b"}, {"p3", "eu", "a"}}
	changes, home := 0, ""
	for now := t0; now.Before(t0.Add(time.Hour)); now = now.Add(25 * time.Second) {
		h.observe("p1", jittered(r, 20*time.Millisecond, 5*time.Millisecond), now)
		h.observe("p2", jittered(r, 22*time.Millisecond, 5*time.Millisecond), now)
		h.observe("p3", jittered(r, 80*time.Millisecond, 5*time.Millisecond), now)
		if got := h.choose(proxies, now); got != home {
			if home != "" {
				changes++
			}
			home = got
		}
	}
	if changes > 1 {
		t.Errorf("%d home changes in an hour under ±5 ms of jitter, want at most 1", changes)
	}
	if home == "p3" {
		t.Error("home in another region while the agent's own answers")
	}
}

// A clearly better proxy (10 ms and a third better) takes the home; a
// slightly better one does not.
func TestHomeMovesOnlyWhenClearlyBetter(t *testing.T) {
	h := newHomes("us", defaultHomeRule)
	proxies := []homeProxy{{"p1", "us", "a"}, {"p2", "us", "b"}}
	h.observe("p1", 30*time.Millisecond, t0)
	if got := h.choose(proxies, t0); got != "p1" {
		t.Fatalf("first home %q, want p1, the only one measured", got)
	}
	h.observe("p2", 25*time.Millisecond, t0.Add(time.Second))
	if got := h.choose(proxies, t0.Add(time.Second)); got != "p1" {
		t.Fatalf("moved to %q for 5 ms", got)
	}
	h.observe("p2", 15*time.Millisecond, t0.Add(2*time.Second))
	if got := h.choose(proxies, t0.Add(2*time.Second)); got != "p2" {
		t.Fatalf("home %q after p2 became 15 ms better (half), want p2", got)
	}
}

// The region's proxies stop answering: the home goes to the nearest other
// region; when one of its own answers again, it comes home.
func TestHomeLeavesADeadRegionAndComesBack(t *testing.T) {
	h := newHomes("us", defaultHomeRule)
	proxies := []homeProxy{{"p1", "us", "a"}, {"e1", "eu", "a"}, {"a1", "ap", "a"}}
	now := t0
	h.observe("p1", 5*time.Millisecond, now)
	h.observe("e1", 80*time.Millisecond, now)
	h.observe("a1", 120*time.Millisecond, now)
	if got := h.choose(proxies, now); got != "p1" {
		t.Fatalf("home %q, want p1", got)
	}
	// p1 goes silent; the others keep answering.
	for range 3 {
		now = now.Add(15 * time.Second)
		h.observe("e1", 80*time.Millisecond, now)
		h.observe("a1", 120*time.Millisecond, now)
	}
	if got := h.choose(proxies, now); got != "e1" {
		t.Fatalf("home %q with us silent for 45 s, want e1, the nearest other region", got)
	}
	now = now.Add(time.Second)
	h.observe("p1", 6*time.Millisecond, now)
	h.observe("e1", 80*time.Millisecond, now)
	if got := h.choose(proxies, now); got != "p1" {
		t.Fatalf("home %q once p1 answers again, want p1 (home region)", got)
	}
	// Nothing answers at all.
	if got := h.choose(proxies, now.Add(time.Hour)); got != "" {
		t.Fatalf("home %q with nothing measured for an hour", got)
	}
}
