package agent

import (
	"slices"
	"time"
)

// homeRule is when an agent moves its home proxy: tailscale's rule for its
// home DERP region, whose numbers keep a home steady under jitter. A
// proxy's latency is the best round trip seen in the last Window; the home
// moves only to a proxy that is better by at least MinGain and by at
// least MinFrac of the home's latency, or when the home stops answering.
type homeRule struct {
	Window  time.Duration
	MinGain time.Duration
	MinFrac float64
	// Silence is how long a home may go unmeasured before it counts as
	// gone.
	Silence time.Duration
}

var defaultHomeRule = homeRule{Window: 5 * time.Minute, MinGain: 10 * time.Millisecond, MinFrac: 1.0 / 3, Silence: 30 * time.Second}

// homeProxy is one proxy as the home choice sees it.
type homeProxy struct {
	ID, Region, Zone string
}

type rttSample struct {
	at  time.Time
	rtt time.Duration
}

// homes picks an agent's home proxy among the proxies it knows: the
// nearest of its own region, else (no proxy of its region answers) the
// nearest of any; and keeps it while the rule says so. Not safe for
// concurrent use; its owner serializes calls.
type homes struct {
	region  string
	rule    homeRule
	samples map[string][]rttSample
	current string
}

func newHomes(region string, rule homeRule) *homes {
	return &homes{region: region, rule: rule, samples: map[string][]rttSample{}}
}

// observe records a measured round trip to proxy id at now.
func (h *homes) observe(id string, rtt time.Duration, now time.Time) {
	s := append(h.samples[id], rttSample{now, rtt})
	// Keep the window only.
	i := 0
	for i < len(s) && now.Sub(s[i].at) > h.rule.Window {
		i++
	}
	h.samples[id] = s[i:]
}

// latency is the best round trip to id in the window, and whether id was
// measured within Silence.
func (h *homes) latency(id string, now time.Time) (best time.Duration, fresh bool) {
	best = -1
	for _, s := range h.samples[id] {
		if now.Sub(s.at) > h.rule.Window {
			continue
		}
		if best < 0 || s.rtt < best {
			best = s.rtt
		}
		if now.Sub(s.at) <= h.rule.Silence {
			fresh = true
		}
	}
	return best, fresh
}

// choose returns the home among proxies at now ("" when none answers).
func (h *homes) choose(proxies []homeProxy, now time.Time) string {
	type cand struct {
		homeProxy
		rtt time.Duration
	}
	var own, all []cand
	for _, p := range proxies {
		rtt, fresh := h.latency(p.ID, now)
		if rtt < 0 || !fresh {
			continue
		}
		c := cand{p, rtt}
		all = append(all, c)
		if p.Region == h.region {
			own = append(own, c)
		}
	}
	pool := own
	if len(pool) == 0 {
		pool = all // the region has no live proxy: the nearest elsewhere
	}
	if len(pool) == 0 {
		h.current = ""
		return ""
	}
	best := slices.MinFunc(pool, func(a, b cand) int { return int(a.rtt - b.rtt) })
	i := slices.IndexFunc(pool, func(c cand) bool { return c.ID == h.current })
	if i < 0 {
		// No home yet, or it stopped answering, or it is not in the pool
		// (the agent's own region came back): take the best.
		h.current = best.ID
		return h.current
	}
	cur := pool[i]
	gain := cur.rtt - best.rtt
	if gain >= h.rule.MinGain && float64(gain) >= h.rule.MinFrac*float64(cur.rtt) {
		h.current = best.ID
	}
	return h.current
}
