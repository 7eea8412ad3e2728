package session

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

// Load counts live sessions per agent and remembers agents that just
// failed a dial, so that the next sessions try them last.
type Load interface {
	Sessions(agentID string) int
	Add(agentID string, delta int)
	Failed(agentID string)
	Succeeded(agentID string)
	RecentlyFailed(agentID string) bool
	// PeerRTT is the measured round trip to a peer proxy (0 if unknown).
	PeerRTT(proxyID string) time.Duration
}

// pathRTT is the measured round trip from this proxy to an agent through
// e, or -1 when part of it is not measured yet.
func pathRTT(e router.Endpoint, load Load) time.Duration {
	if e.RTT <= 0 {
		return -1
	}
	if e.Local {
		return e.RTT
	}
	peer := load.PeerRTT(e.ProxyID)
	if peer <= 0 {
		return -1
	}
	return e.RTT + peer
}

// orderCandidates orders the usable endpoints: agents by the strategy,
// and for each agent its endpoints local first, then this region, then
// other regions by measured path round trip (so that a session goes
// straight to the region where the agent's tunnel is nearest, never by a
// third region's proxy when a nearer tunnel exists); ties, and paths not
// measured yet, newest tunnel first (when an agent has just re-homed, an
// old route through a proxy that died may linger until membership
// notices). The default strategy orders agents the same way, by their
// best endpoint.
func orderCandidates(c []router.Endpoint, strategy, region string, load Load) []router.Endpoint {
	byAgent := map[string][]router.Endpoint{}
	var agents []string
	for _, e := range c {
		if byAgent[e.AgentID] == nil {
			agents = append(agents, e.AgentID)
		}
		byAgent[e.AgentID] = append(byAgent[e.AgentID], e)
	}
	tier := func(e router.Endpoint) int {
		switch {
		case e.Local:
			return 0
		case region != "" && e.Region == region:
			return 1
		}
		return 2
	}
	// far is the path round trip of an endpoint in another region (an
	// hour when not measured: after every measured one).
	far := func(e router.Endpoint) time.Duration {
		if d := pathRTT(e, load); load != nil && d >= 0 {
			return d
		}
		return time.Hour
	}
	closer := func(a, b router.Endpoint) int {
		if ta, tb := tier(a), tier(b); ta != tb {
			return ta - tb
		}
		if tier(a) == 2 {
			if fa, fb := far(a), far(b); fa != fb {
				return int(fa - fb)
			}
		}
		return 0
	}
	for _, eps := range byAgent {
		sort.SliceStable(eps, func(i, j int) bool {
			if c := closer(eps[i], eps[j]); c != 0 {
				return c < 0
			}
			return eps[i].Connected.After(eps[j].Connected)
		})
	}
	rand.Shuffle(len(agents), func(i, j int) { agents[i], agents[j] = agents[j], agents[i] })
	switch strategy {
	case model.StrategyRandom:
		// Uniform over agents: the shuffle is the order.
	case model.StrategyLeastSessions:
		if load != nil && len(agents) >= 2 && load.Sessions(agents[1]) < load.Sessions(agents[0]) {
			agents[0], agents[1] = agents[1], agents[0]
		}
		if load != nil && len(agents) > 2 {
			rest := agents[1:]
			sort.SliceStable(rest, func(i, j int) bool { return load.Sessions(rest[i]) < load.Sessions(rest[j]) })
		}
	case model.StrategyNearest:
		if load != nil {
			// Each agent's endpoints by path RTT; agents by their nearest;
			// unmeasured paths go after measured ones.
			cost := func(e router.Endpoint) time.Duration {
				if d := pathRTT(e, load); d >= 0 {
					return d
				}
				return time.Hour
			}
			for _, eps := range byAgent {
				sort.SliceStable(eps, func(i, j int) bool { return cost(eps[i]) < cost(eps[j]) })
			}
			sort.SliceStable(agents, func(i, j int) bool { return cost(byAgent[agents[i]][0]) < cost(byAgent[agents[j]][0]) })
		}
	default:
		sort.SliceStable(agents, func(i, j int) bool { return closer(byAgent[agents[i]][0], byAgent[agents[j]][0]) < 0 })
	}
	if load != nil {
		// An agent that just failed a dial (stopped, cut off, upstream
		// down) goes last until it serves a session again.
		sort.SliceStable(agents, func(i, j int) bool { return !load.RecentlyFailed(agents[i]) && load.RecentlyFailed(agents[j]) })
	}
	out := make([]router.Endpoint, 0, len(c))
	for _, id := range agents {
		out = append(out, byAgent[id]...)
	}
	return out
}

// preferAgent moves the endpoints of agentID to the front, keeping order
// otherwise.
func preferAgent(c []router.Endpoint, agentID string) {
	sort.SliceStable(c, func(i, j int) bool { return c[i].AgentID == agentID && c[j].AgentID != agentID })
}

// unusableReason explains why no endpoint of a resource can take a session.
func unusableReason(name string, eps []router.Endpoint, now time.Time) string {
	for _, e := range eps {
		if e.Online && !e.Healthy {
			detail := e.Detail
			if detail == "" {
				detail = "its agent reports it unhealthy"
			}
			return fmt.Sprintf("resource %q is unhealthy: %s", name, detail)
		}
	}
	last := eps[0]
	for _, e := range eps {
		if e.LastSeen.After(last.LastSeen) {
			last = e
		}
	}
	ago := "never"
	if !last.LastSeen.IsZero() {
		ago = now.Sub(last.LastSeen).Round(time.Second).String() + " ago"
	}
	return fmt.Sprintf("resource %q is offline: agent %s has no live tunnel to any proxy (last seen %s)", name, last.AgentID, ago)
}
