package connect

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var (
	t0    = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cands = []Candidate{
		{ID: "eu-1", Region: "eu", UserAddr: "10.0.0.1:3023"},
		{ID: "eu-2", Region: "eu", UserAddr: "10.0.0.2:3023"},
		{ID: "us-1", Region: "us", UserAddr: "10.0.1.1:3023"},
	}
)

func rtts(ms map[string]float64) map[string]Result {
	out := map[string]Result{}
	for id, v := range ms {
		out[id] = Result{ID: id, RTT: time.Duration(v * float64(time.Millisecond))}
	}
	return out
}

// round runs one Choose and records it, as Connect does.
func round(t *testing.T, st *State, results map[string]Result, region string, now time.Time) string {
	t.Helper()
	d, err := Choose(st, cands, results, region, now)
	if err != nil {
		t.Fatal(err)
	}
	st.Record(slicesOf(results), now)
	return d.Order[0].ID
}

// TestStickyUnderJitter: two proxies whose round trips jitter around 20
// and 24 ms swap places often, yet the first choice is kept through a
// thousand rounds (tailscale's hysteresis; Coder's lesson).
func TestStickyUnderJitter(t *testing.T) {
	st := &State{}
	rng := rand.New(rand.NewPCG(1, 2))
	first := ""
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * 20 * time.Second)
		got := round(t, st, rtts(map[string]float64{
			"eu-1": 20 + rng.Float64()*10 - 5,
			"eu-2": 24 + rng.Float64()*10 - 5,
			"us-1": 90 + rng.Float64()*10,
		}), "", now)
		if first == "" {
			first = got
		}
		if got != first {
			t.Fatalf("round %d: moved from %s to %s under jitter", i, first, got)
		}
	}
}

// TestMovesOnlyWhenClearlyBetter: table of home and challenger figures.
func TestMovesOnlyWhenClearlyBetter(t *testing.T) {
	for _, tc := range []struct {
		home, challenger float64
		move             bool
	}{
		{30, 19, true},   // 11 ms and more than a third faster
		{30, 21, false},  // 9 ms: under the 10 ms floor
		{100, 70, false}, // 30 ms but less than a third
		{100, 66, true},  // 34 ms and a third
		{5, 1, false},    // four-fifths faster but only 4 ms
	} {
		st := &State{Homes: map[string]string{"": "eu-1"}}
		got := round(t, st, rtts(map[string]float64{"eu-1": tc.home, "eu-2": tc.challenger}), "", t0)
		if moved := got == "eu-2"; moved != tc.move {
			t.Errorf("home %v ms, challenger %v ms: got %s, want move=%v", tc.home, tc.challenger, got, tc.move)
		}
	}
}

// TestHomeFigureIsItsBestRecent: one slow answer from the home does not
// let a challenger in (its best of the last five minutes counts), but
// once that best is older than Window it no longer does.
func TestHomeFigureIsItsBestRecent(t *testing.T) {
	st := &State{}
	if got := round(t, st, rtts(map[string]float64{"eu-1": 10, "eu-2": 12}), "", t0); got != "eu-1" {
		t.Fatalf("first round chose %s, want eu-1", got)
	}
	if got := round(t, st, rtts(map[string]float64{"eu-1": 60, "eu-2": 12}), "", t0.Add(time.Minute)); got != "eu-1" {
		t.Fatalf("one slow answer from the home moved it to %s", got)
	}
	if got := round(t, st, rtts(map[string]float64{"eu-1": 60, "eu-2": 12}), "", t0.Add(Window+2*time.Minute)); got != "eu-2" {
		t.Fatalf("the home slow for longer than the window: got %s, want eu-2", got)
	}
}

// TestFailsOverAtOnce: a home that is down, or not ready, is left in the
// same round for the best usable proxy, whatever its figures were.
func TestFailsOverAtOnce(t *testing.T) {
	for name, bad := range map[string]Result{
		"down":      {Err: errors.New("connection refused")},
		"not ready": {RTT: time.Millisecond, NotReady: "/readyz answered 503: starting or stopping"},
	} {
		st := &State{}
		round(t, st, rtts(map[string]float64{"eu-1": 1, "eu-2": 40, "us-1": 50}), "", t0)
		res := rtts(map[string]float64{"eu-2": 40, "us-1": 50})
		bad.ID = "eu-1"
		res["eu-1"] = bad
		d, err := Choose(st, cands, res, "", t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if d.Order[0].ID != "eu-2" || len(d.Order) != 2 || !strings.Contains(d.Why, "eu-1 is not usable") {
			t.Errorf("%s: order %v (%s), want eu-2 then us-1", name, ids(d.Order), d.Why)
		}
	}
}

// TestRegionPreferred: with a region, its proxies win over a faster one
// elsewhere; others are used only when none of the region's is usable,
// and the region's proxy is taken back when it returns.
func TestRegionPreferred(t *testing.T) {
	st := &State{}
	if got := round(t, st, rtts(map[string]float64{"eu-1": 80, "us-1": 5}), "eu", t0); got != "eu-1" {
		t.Fatalf("region eu chose %s", got)
	}
	res := rtts(map[string]float64{"us-1": 5})
	res["eu-1"] = Result{ID: "eu-1", Err: errors.New("connection refused")}
	d, err := Choose(st, cands, res, "eu", t0)
	if err != nil || d.Order[0].ID != "us-1" || !d.OutsideRegion {
		t.Fatalf("region eu down: %v %+v", err, d)
	}
	if got := round(t, st, rtts(map[string]float64{"eu-1": 80, "us-1": 5}), "eu", t0); got != "eu-1" {
		t.Fatalf("region eu back: chose %s", got)
	}
	if st.Homes["eu"] != "eu-1" || st.Homes[""] != "" {
		t.Fatalf("homes %v: the region's home is kept apart", st.Homes)
	}
}

// TestNothingUsableSaysWhy: the error names every proxy and its failure.
func TestNothingUsableSaysWhy(t *testing.T) {
	res := map[string]Result{
		"eu-1": {ID: "eu-1", Err: errors.New("connection refused")},
		"eu-2": {ID: "eu-2", RTT: time.Millisecond, NotReady: "/readyz answered 503: waiting for the peers' routes"},
		"us-1": {ID: "us-1", Err: errors.New("no answer within 1s")},
	}
	_, err := Choose(&State{}, cands, res, "", t0)
	want := "no proxy is reachable and ready; tried eu-1 (10.0.0.1:3023) connection refused; eu-2 (10.0.0.2:3023) not ready: /readyz answered 503: waiting for the peers' routes; us-1 (10.0.1.1:3023) no answer within 1s"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatal("the error is more than one line")
	}
}

func TestRecordForgets(t *testing.T) {
	st := &State{}
	for i := range MaxSamples + 5 {
		st.Record([]Result{{ID: "eu-1", RTT: time.Duration(i+1) * time.Millisecond}}, t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(st.Samples["eu-1"]); n != MaxSamples {
		t.Fatalf("%d samples kept, want %d", n, MaxSamples)
	}
	st.Record(nil, t0.Add(time.Hour))
	if len(st.Samples) != 0 {
		t.Fatalf("samples older than the window kept: %v", st.Samples)
	}
}

func ids(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}
