// Package connect picks the proxy that `warren connect` (an ssh
// ProxyCommand) relays a user's connection to: the nearest ready proxy,
// kept while it stays ready so that a user's connections do not flap
// between proxies, and left at once when it stops answering or says it is
// not ready.
//
// The rule is tailscale's choice of a home DERP region (net/netcheck):
//
//   - Every run probes every candidate at once: a TCP connect to its user
//     port (the round trip) and, when its HTTP address is known, GET /readyz.
//     A proxy whose user port does not answer, or whose /readyz answers
//     anything but 200, is never chosen.
//   - Each proxy's round trips of the last Window are kept (State, a small
//     file); a proxy's figure is the best of them, so one slow answer does
//     not count against it.
//   - The home (the last choice, per region preference) is kept unless
//     another ready proxy is clearly better: at least MinImprovement
//     faster and faster by a third (its figure below 2/3 of the home's).
//   - A home that is down or not ready is left at once for the best ready
//     proxy; the others follow as fallbacks in order of their figures.
//   - With a region preference, proxies of that region come first; other
//     regions are used only when none of the region's proxies is ready.
//
// Choose is the rule alone, a pure function tested apart from the network;
// Probe measures; Connect does both and returns the chosen proxy's
// connection.
package connect

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

// The numbers of the rule, from tailscale's net/netcheck (where the home
// DERP region changes only for one a third faster and, since 2024,
// 10 ms faster).
const (
	// Window is how long a measured round trip counts.
	Window = 5 * time.Minute
	// MaxSamples bounds the round trips kept per proxy.
	MaxSamples = 16
	// MinImprovement is how much faster another proxy must be to replace
	// the home (and at least a third faster).
	MinImprovement = 10 * time.Millisecond
)

// Candidate is one proxy a user may be relayed to.
type Candidate struct {
	ID     string
	Region string
	// UserAddr is its SSH user port (host:port); HTTPAddr its HTTP port,
	// for /readyz, or "" when unknown.
	UserAddr, HTTPAddr string
}

// Result is what one probe of a candidate found.
type Result struct {
	ID string
	// RTT is the time a TCP connect to the user port took; Err is set
	// instead when it failed.
	RTT time.Duration
	Err error
	// NotReady is why the proxy said (or showed) it is not ready, or ""
	// when /readyz said 200 or could not be asked.
	NotReady string
}

// Usable reports whether the probe found the proxy reachable and ready.
func (r Result) Usable() bool { return r.Err == nil && r.NotReady == "" }

// Sample is one measured round trip.
type Sample struct {
	At  time.Time     `json:"at"`
	RTT time.Duration `json:"rtt_ns"`
}

// State is what is kept between runs.
type State struct {
	// Homes are the chosen proxies by region preference ("" for none).
	Homes map[string]string `json:"homes,omitempty"`
	// Samples are each proxy's recent round trips, oldest first.
	Samples map[string][]Sample `json:"samples,omitempty"`
}

// Record adds the round trips of usable results and forgets those older
// than Window (and any beyond MaxSamples per proxy).
func (s *State) Record(results []Result, now time.Time) {
	if s.Samples == nil {
		s.Samples = map[string][]Sample{}
	}
	for _, r := range results {
		if r.Usable() {
			s.Samples[r.ID] = append(s.Samples[r.ID], Sample{At: now, RTT: r.RTT})
		}
	}
	for id, ss := range s.Samples {
		ss = slices.DeleteFunc(ss, func(x Sample) bool { return now.Sub(x.At) > Window || x.At.After(now) })
		if len(ss) > MaxSamples {
			ss = ss[len(ss)-MaxSamples:]
		}
		if len(ss) == 0 {
			delete(s.Samples, id)
		} else {
			s.Samples[id] = ss
		}
	}
}

// Best is a proxy's best round trip of the last Window, with the one
// just measured (cur, or 0 for none) counted too; ok is false when there
// is none.
func (s *State) Best(id string, cur time.Duration, now time.Time) (best time.Duration, ok bool) {
	if cur > 0 {
		best, ok = cur, true
	}
	for _, x := range s.Samples[id] {
		if now.Sub(x.At) <= Window && !x.At.After(now) && (!ok || x.RTT < best) {
			best, ok = x.RTT, true
		}
	}
	return best, ok
}

// ClearlyBetter reports whether a proxy whose figure is challenger should
// replace a home whose figure is home: MinImprovement faster and a third
// faster.
func ClearlyBetter(challenger, home time.Duration) bool {
	return home-challenger >= MinImprovement && challenger*3 < home*2
}

// Decision is the outcome of Choose.
type Decision struct {
	// Order is the usable candidates, the chosen one first, then the
	// fallbacks in the order to try them.
	Order []Candidate
	// Why says in a few words why Order[0] was chosen.
	Why string
	// OutsideRegion is set when a region was preferred but none of its
	// proxies is usable, so Order holds other regions' proxies.
	OutsideRegion bool
}

// Choose applies the rule to one round of results (by candidate id) and
// records the choice as the home for region in st. It fails, naming
// every candidate and what its probe found, when none is usable.
func Choose(st *State, cands []Candidate, results map[string]Result, region string, now time.Time) (Decision, error) {
	figure := func(c Candidate) time.Duration {
		b, _ := st.Best(c.ID, results[c.ID].RTT, now)
		return b
	}
	var inRegion, others []Candidate
	for _, c := range cands {
		if r, ok := results[c.ID]; !ok || !r.Usable() {
			continue
		}
		if region == "" || c.Region == region {
			inRegion = append(inRegion, c)
		} else {
			others = append(others, c)
		}
	}
	byFigure := func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(figure(a), figure(b)), strings.Compare(a.ID, b.ID))
	}
	slices.SortFunc(inRegion, byFigure)
	slices.SortFunc(others, byFigure)
	var d Decision
	pool := inRegion
	if len(pool) == 0 {
		if len(others) == 0 {
			return Decision{}, noneUsable(cands, results, region)
		}
		pool, others, d.OutsideRegion = others, nil, true
	}
	pick := 0
	home := st.Homes[region]
	if i := slices.IndexFunc(pool, func(c Candidate) bool { return c.ID == home }); i >= 0 {
		best, h := figure(pool[0]), figure(pool[i])
		if i > 0 && ClearlyBetter(best, h) {
			d.Why = fmt.Sprintf("%s is clearly faster than %s (%s against %s)", pool[0].ID, home, ms(best), ms(h))
		} else {
			pick = i
			d.Why = fmt.Sprintf("kept %s (%s)", home, ms(h))
		}
	} else if home != "" {
		d.Why = fmt.Sprintf("%s is not usable (%s); %s is the fastest ready proxy (%s)", home, why(results, home), pool[0].ID, ms(figure(pool[0])))
	} else {
		d.Why = fmt.Sprintf("%s is the fastest ready proxy (%s)", pool[0].ID, ms(figure(pool[0])))
	}
	d.Order = append(append([]Candidate{pool[pick]}, slices.Delete(slices.Clone(pool), pick, pick+1)...), others...)
	if st.Homes == nil {
		st.Homes = map[string]string{}
	}
	st.Homes[region] = pool[pick].ID
	return d, nil
}

// why says what the probe of id found, for messages.
func why(results map[string]Result, id string) string {
	r, ok := results[id]
	switch {
	case !ok:
		return "no longer listed"
	case r.Err != nil:
		return r.Err.Error()
	case r.NotReady != "":
		return "not ready: " + r.NotReady
	}
	return "ready"
}

// noneUsable is the one-line error when no candidate can be used.
func noneUsable(cands []Candidate, results map[string]Result, region string) error {
	if len(cands) == 0 {
		return fmt.Errorf("no proxy to try: the proxies file lists none (run `warren config ssh --connect` again)")
	}
	parts := make([]string, len(cands))
	for i, c := range cands {
		parts[i] = fmt.Sprintf("%s (%s) %s", c.ID, c.UserAddr, why(results, c.ID))
	}
	where := ""
	if region != "" {
		where = " in any region"
	}
	return fmt.Errorf("no proxy is reachable and ready%s; tried %s", where, strings.Join(parts, "; "))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// CheckRegion reports a region name that is not valid.
func CheckRegion(region string) error { return model.CheckName("region", region) }
