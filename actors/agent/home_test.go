package agent

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/warren-proxy/warren/transport/revtunnel"
)

var t0 = time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)

const ms = time.Millisecond

func jittered(r *rand.Rand, base, jitter time.Duration) time.Duration {
	return base - jitter + time.Duration(r.Int64N(int64(2*jitter)+1))
}

// regional is a directory for an agent of region us that knows us1 and
// us2 (zones a and b), us3 (zone a) and eu1, with the home rule of a 10 s
// probe interval.
func regional(t *testing.T) *directory {
	t.Helper()
	d := newDirectory("us", []string{"seed:3024"}, newHomeRule(10*time.Second))
	d.update([]revtunnel.ProxyInfo{
		{ID: "us1", TunnelAddr: "us1:3024", Region: "us", Zone: "a"},
		{ID: "us2", TunnelAddr: "us2:3024", Region: "us", Zone: "b"},
		{ID: "us3", TunnelAddr: "us3:3024", Region: "us", Zone: "a"},
		{ID: "eu1", TunnelAddr: "eu1:3024", Region: "eu", Zone: "a"},
	})
	return d
}

// measure records one probe round (a missing proxy or rtt < 0 did not
// answer).
func measure(d *directory, now time.Time, rtt map[string]time.Duration) {
	for _, p := range d.known() {
		r, ok := rtt[p.ID]
		if !ok {
			r = -1
		}
		d.observe(p.ID, r, now)
	}
}

// connect does what a slot does with the address pick gives: claim the
// proxy at that address and bring its tunnel up.
func connect(t *testing.T, d *directory, slot string, now time.Time) string {
	t.Helper()
	addr := d.pick(slot, now)
	id := addr[:len(addr)-len(":3024")]
	if err := d.claim(slot, id); err != nil {
		t.Fatalf("%s: claim %s: %v", slot, id, err)
	}
	d.up(slot, now)
	return id
}

// follow does what a slot does when move answers: open the tunnel there,
// take it as its own, and (its sessions ended) let the old one go. It
// returns the slot's proxy.
func follow(t *testing.T, d *directory, slot string, now time.Time) string {
	t.Helper()
	if _, id := d.move(slot, now); id != "" {
		if err := d.claim(slot+nextSuffix, id); err != nil {
			t.Fatalf("%s: claim %s to move there: %v", slot, id, err)
		}
		d.release(d.promote(slot, now))
	}
	return d.holding(slot)
}

// Proxies of the agent's region 2 ms apart, measured every 10 s with
// ±5 ms of jitter for an hour: the tunnel stays where it is.
func TestHomeStaysUnderJitter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d := regional(t)
	round := func(now time.Time) {
		measure(d, now, map[string]time.Duration{
			"us1": jittered(r, 20*ms, 5*ms), "us2": jittered(r, 22*ms, 5*ms),
			"us3": jittered(r, 21*ms, 5*ms), "eu1": jittered(r, 80*ms, 5*ms),
		})
	}
	round(t0)
	home := connect(t, d, "peer-0", t0)
	if home == "eu1" {
		t.Fatalf("first home %s, in another region while the agent's answers", home)
	}
	changes := 0
	for now := t0; now.Before(t0.Add(time.Hour)); now = now.Add(10 * time.Second) {
		round(now)
		if got := follow(t, d, "peer-0", now); got != home {
			t.Logf("%v: moved from %s to %s", now.Sub(t0), home, got)
			changes++
			home = got
		}
	}
	if changes > 1 {
		t.Errorf("%d home changes in an hour under ±5 ms of jitter, want at most 1", changes)
	}
}

// A clearly nearer proxy (10 ms and a third better) takes the tunnel; a
// slightly nearer one does not; nor does any before the slot has dwelt.
func TestHomeMovesOnlyWhenClearlyBetter(t *testing.T) {
	d := regional(t)
	measure(d, t0, map[string]time.Duration{"us1": 30 * ms, "eu1": 80 * ms})
	if got := connect(t, d, "peer-0", t0); got != "us1" {
		t.Fatalf("first home %s, want us1, the only one of us that answers", got)
	}
	now := t0
	for range 6 {
		now = now.Add(10 * time.Second)
		measure(d, now, map[string]time.Duration{"us1": 30 * ms, "us2": 25 * ms, "eu1": 80 * ms})
		if got := follow(t, d, "peer-0", now); got != "us1" {
			t.Fatalf("%v: moved to %s, 5 ms nearer: not clearly better", now.Sub(t0), got)
		}
	}
	d2 := regional(t)
	measure(d2, t0, map[string]time.Duration{"us1": 30 * ms})
	connect(t, d2, "peer-0", t0)
	measure(d2, t0.Add(10*time.Second), map[string]time.Duration{"us1": 30 * ms, "us2": 15 * ms})
	if got := follow(t, d2, "peer-0", t0.Add(10*time.Second)); got != "us1" {
		t.Fatalf("moved to %s before dwelling on us1", got)
	}
	for now := t0.Add(20 * time.Second); now.Before(t0.Add(time.Minute)); now = now.Add(10 * time.Second) {
		measure(d2, now, map[string]time.Duration{"us1": 30 * ms, "us2": 15 * ms})
		follow(t, d2, "peer-0", now)
	}
	if got := d2.holding("peer-0"); got != "us2" {
		t.Errorf("after a minute at 30 ms with us2 at 15 ms: on %s, want us2", got)
	}
}

// Two slots take distinct zones of the agent's region even when a nearer
// proxy shares a zone.
func TestHomeSpreadsOverZones(t *testing.T) {
	d := regional(t)
	measure(d, t0, map[string]time.Duration{"us1": 20 * ms, "us3": 21 * ms, "us2": 28 * ms, "eu1": 80 * ms})
	a := connect(t, d, "peer-0", t0)
	b := connect(t, d, "peer-1", t0)
	if a != "us1" || b != "us2" {
		t.Fatalf("slots on %s and %s, want us1 (nearest) and us2 (the other zone)", a, b)
	}
	for now := t0; now.Before(t0.Add(10 * time.Minute)); now = now.Add(10 * time.Second) {
		measure(d, now, map[string]time.Duration{"us1": 20 * ms, "us3": 21 * ms, "us2": 28 * ms, "eu1": 80 * ms})
		for _, slot := range []string{"peer-0", "peer-1"} {
			follow(t, d, slot, now)
		}
	}
	if a, b := d.holding("peer-0"), d.holding("peer-1"); a != "us1" || b != "us2" {
		t.Errorf("after 10 minutes slots on %s and %s, want us1 and us2", a, b)
	}
}

// The region's proxies stop answering: a slot whose tunnel ended picks the
// nearest of another region; when the region answers again, the slot goes
// home once it has answered for a probe interval, to a zone of its own.
func TestHomeFallsBackAndReturns(t *testing.T) {
	d := newDirectory("us", []string{"seed:3024"}, newHomeRule(10*time.Second))
	d.update([]revtunnel.ProxyInfo{
		{ID: "us1", TunnelAddr: "us1:3024", Region: "us", Zone: "a"},
		{ID: "us2", TunnelAddr: "us2:3024", Region: "us", Zone: "b"},
		{ID: "eu1", TunnelAddr: "eu1:3024", Region: "eu", Zone: "a"},
		{ID: "eu2", TunnelAddr: "eu2:3024", Region: "eu", Zone: "b"},
		{ID: "ap1", TunnelAddr: "ap1:3024", Region: "ap", Zone: "a"},
	})
	up := map[string]time.Duration{"us1": 1 * ms, "us2": 1 * ms, "eu1": 80 * ms, "eu2": 81 * ms, "ap1": 120 * ms}
	measure(d, t0, up)
	connect(t, d, "peer-0", t0)
	connect(t, d, "peer-1", t0)

	// us goes: the tunnels end, the probes fail.
	lost := t0.Add(time.Minute)
	d.release("peer-0")
	d.release("peer-1")
	d.fail("us1", lost)
	d.fail("us2", lost)
	measure(d, lost, map[string]time.Duration{"eu1": 80 * ms, "eu2": 81 * ms, "ap1": 120 * ms})
	a, b := connect(t, d, "peer-0", lost), connect(t, d, "peer-1", lost)
	if a[:2] != "eu" || b[:2] != "eu" {
		t.Fatalf("with us gone, slots on %s and %s, want the nearest region's eu1 and eu2", a, b)
	}

	// us comes back: no move on its first answer; home after it settles.
	back := lost.Add(time.Minute)
	measure(d, back, up)
	if got := follow(t, d, "peer-0", back); got[:2] != "eu" {
		t.Fatalf("moved home to %s on its first answer, before it settled", got)
	}
	for now := back.Add(10 * time.Second); now.Before(back.Add(time.Minute)); now = now.Add(10 * time.Second) {
		measure(d, now, up)
		follow(t, d, "peer-0", now)
		follow(t, d, "peer-1", now)
	}
	a, b = d.holding("peer-0"), d.holding("peer-1")
	if a[:2] != "us" || b[:2] != "us" || a == b {
		t.Errorf("a minute after us returned, slots on %s and %s, want us1 and us2", a, b)
	}
}
