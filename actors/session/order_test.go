package session

import (
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/internal/model"
)

func ep(agent, proxy, region string, local bool) router.Endpoint {
	return router.Endpoint{Resource: model.Resource{Name: "db", AgentID: agent, ProxyID: proxy, Healthy: true}, Online: true, Local: local, Region: region}
}

type fixedLoad map[string]int

func (l fixedLoad) Sessions(id string) int { return l[id] }
func (l fixedLoad) Add(string, int)        {}
func (l fixedLoad) Failed(string)          {}
func (l fixedLoad) Succeeded(string)       {}
func (l fixedLoad) RecentlyFailed(id string) bool {
	return l[id] < 0
}
func (l fixedLoad) PeerRTT(id string) time.Duration {
	return time.Duration(l["peer:"+id]) * time.Millisecond
}

func firstPicks(n int, eps []router.Endpoint, strategy string, load Load) map[string]int {
	got := map[string]int{}
	for i := 0; i < n; i++ {
		c := append([]router.Endpoint(nil), eps...)
		got[orderCandidates(c, strategy, "eu", load)[0].AgentID]++
	}
	return got
}

func TestRandomSpreadsUniformly(t *testing.T) {
	eps := []router.Endpoint{ep("a1", "p1", "eu", true), ep("a2", "p2", "eu", false), ep("a3", "p3", "us", false),
		ep("a3", "p1", "eu", true)} // a3 has two tunnels: still one agent
	const n = 6000
	got := firstPicks(n, eps, model.StrategyRandom, nil)
	chi2 := 0.0
	for _, a := range []string{"a1", "a2", "a3"} {
		d := float64(got[a]) - n/3.0
		chi2 += d * d / (n / 3.0)
	}
	// 3 agents, 2 degrees of freedom: p = 0.001 at 13.82.
	if chi2 > 13.82 {
		t.Fatalf("first picks %v: chi-square %.2f exceeds 13.82 (p=0.001, df=2): not uniform over agents", got, chi2)
	}
}

func TestDefaultPrefersLocalThenRegion(t *testing.T) {
	eps := []router.Endpoint{ep("far", "p3", "us", false), ep("near", "p2", "eu", false), ep("here", "p1", "eu", true)}
	for i := 0; i < 50; i++ {
		got := orderCandidates(append([]router.Endpoint(nil), eps...), model.StrategyDefault, "eu", nil)
		if got[0].AgentID != "here" || got[1].AgentID != "near" || got[2].AgentID != "far" {
			t.Fatalf("got order %s, %s, %s; want here, near, far", got[0].AgentID, got[1].AgentID, got[2].AgentID)
		}
	}
}

func TestLeastSessionsNeverPicksTheBusiest(t *testing.T) {
	eps := []router.Endpoint{ep("a1", "p1", "eu", true), ep("a2", "p1", "eu", true), ep("a3", "p1", "eu", true)}
	load := fixedLoad{"a1": 10, "a2": 3, "a3": 0}
	got := firstPicks(3000, eps, model.StrategyLeastSessions, load)
	if got["a1"] != 0 {
		t.Fatalf("first picks %v: the busiest agent was picked first", got)
	}
	if got["a3"] <= got["a2"] {
		t.Fatalf("first picks %v: want the idle agent picked most", got)
	}
}

func TestAnAgentsEndpointsStayTogetherLocalFirst(t *testing.T) {
	old, fresh := ep("a1", "p2", "eu", false), ep("a1", "p3", "eu", false)
	old.Connected, fresh.Connected = time.Unix(100, 0), time.Unix(200, 0)
	got := orderCandidates([]router.Endpoint{old, ep("a1", "p1", "eu", true), fresh}, model.StrategyDefault, "eu", nil)
	if !got[0].Local || got[1].ProxyID != "p3" || got[2].ProxyID != "p2" {
		t.Fatalf("got %s, %s, %s; want the local tunnel, then the newest remote one", got[0].ProxyID, got[1].ProxyID, got[2].ProxyID)
	}
}

func TestRecentlyFailedAgentsGoLast(t *testing.T) {
	eps := []router.Endpoint{ep("a1", "p1", "eu", true), ep("a2", "p1", "eu", true), ep("a3", "p1", "eu", true)}
	load := fixedLoad{"a2": -1}
	for i := 0; i < 50; i++ {
		got := orderCandidates(append([]router.Endpoint(nil), eps...), model.StrategyRandom, "eu", load)
		if got[2].AgentID != "a2" {
			t.Fatalf("got %s last, want the agent that just failed", got[2].AgentID)
		}
	}
}

func TestNearestFollowsMeasuredRoundTrips(t *testing.T) {
	local := ep("slow-local", "p1", "eu", true)
	local.RTT = 40 * time.Millisecond
	remote := ep("fast-remote", "p2", "eu", false)
	remote.RTT = 2 * time.Millisecond
	unmeasured := ep("unknown", "p1", "eu", true)
	load := fixedLoad{"peer:p2": 5}
	for i := 0; i < 20; i++ {
		got := orderCandidates([]router.Endpoint{local, unmeasured, remote}, model.StrategyNearest, "eu", load)
		if got[0].AgentID != "fast-remote" || got[1].AgentID != "slow-local" || got[2].AgentID != "unknown" {
			t.Fatalf("got %s, %s, %s; want fast-remote (2+5 ms), slow-local (40 ms), then the unmeasured one", got[0].AgentID, got[1].AgentID, got[2].AgentID)
		}
	}
}

// From us, an agent whose tunnels are in eu and in ap (where it fell back
// while eu was down) is reached through eu, the nearer path, whichever
// tunnel is newer; and among agents of other regions, the nearest first.
func TestOtherRegionsByPathRoundTrip(t *testing.T) {
	viaEU, viaAP := ep("a1", "eu1", "eu", false), ep("a1", "ap1", "ap", false)
	viaEU.RTT, viaAP.RTT = time.Millisecond, 150*time.Millisecond
	viaEU.Connected, viaAP.Connected = time.Unix(100, 0), time.Unix(200, 0)
	other := ep("a2", "ap2", "ap", false)
	other.RTT = time.Millisecond
	load := fixedLoad{"peer:eu1": 80, "peer:ap1": 120, "peer:ap2": 120}
	for i := 0; i < 20; i++ {
		got := orderCandidates([]router.Endpoint{viaAP, other, viaEU}, model.StrategyDefault, "us", load)
		if got[0].ProxyID != "eu1" || got[1].ProxyID != "ap1" || got[2].AgentID != "a2" {
			t.Fatalf("got %s/%s, %s/%s, %s/%s; want a1 via eu1 (81 ms), a1 via ap1 (270 ms), a2 (121 ms)",
				got[0].AgentID, got[0].ProxyID, got[1].AgentID, got[1].ProxyID, got[2].AgentID, got[2].ProxyID)
		}
	}
	// Not measured yet: the newest tunnel first, as before.
	viaEU.RTT, viaAP.RTT = 0, 0
	got := orderCandidates([]router.Endpoint{viaEU, viaAP}, model.StrategyDefault, "us", load)
	if got[0].ProxyID != "ap1" {
		t.Errorf("unmeasured paths: got %s first, want the newest tunnel (ap1)", got[0].ProxyID)
	}
}
