package membership

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

// slowClusterPool gives the cluster pool timings that take half a minute
// to declare a proxy dead, so that any death seen sooner came from the
// region's pool (local timings: about a second).
func slowClusterPool(c *Config) {
	c.Profile = model.ProfileLocal
	c.ProbeInterval, c.ProbeTimeout = time.Second, 500*time.Millisecond
	c.SuspicionMult, c.SuspicionMaxMult = 30, 30
}

func inRegion(region string) nodeOpt {
	return func(c *Config) {
		c.Meta.Region = region
		c.RegionBindAddr = strings.Split(c.BindAddr, ":")[0] + ":0"
		c.RegionProfile = model.ProfileLocal
	}
}

// regionCluster starts p1-p3 in eu and p4 in us, each with its region's
// pool, seeded with p1 (the cluster pool only: region pools find each
// other through it).
func regionCluster(t *testing.T, opts ...nodeOpt) []*node {
	t.Helper()
	var nodes []*node
	ids := []string{"p1", "p2", "p3", "p4"}
	for i, id := range ids {
		region := "eu"
		if id == "p4" {
			region = "us"
		}
		o := append([]nodeOpt{slowClusterPool, inRegion(region)}, opts...)
		if i > 0 {
			o = append(o, withSeeds(nodes[0].GossipAddr()))
		}
		nodes = append(nodes, newNode(t, id, fmt.Sprintf("127.0.0.%d", i+1), o...).start(t))
	}
	for _, n := range nodes {
		n.waitMembers(t, 15*time.Second, ids...)
	}
	// Every eu proxy's region pool holds the three of them.
	for _, n := range nodes[:3] {
		if !waitFor(15*time.Second, func() bool { return len(n.region.Members()) == 3 }) {
			t.Fatalf("%s: region pool members %v, want p1-p3", n.name, n.region.Members())
		}
	}
	return nodes
}

func TestRegionPoolAdvertisesItsAddress(t *testing.T) {
	checkGoroutines(t)
	nodes := regionCluster(t)
	for _, n := range nodes {
		self := n.Self()
		if self.RegionGossip == "" || self.RegionGossip != n.region.GossipAddr() {
			t.Errorf("%s advertises region pool %q, its pool is at %q", n.name, self.RegionGossip, n.region.GossipAddr())
		}
	}
	for _, m := range nodes[3].Members() {
		if m.RegionGossip == "" {
			t.Errorf("p4 sees %s without its region pool address", m.ProxyID)
		}
	}
	// The us proxy's pool is alone: no eu proxy was let in.
	if got := nodes[3].region.Members(); len(got) != 1 {
		t.Errorf("us region pool has %d members, want only p4: %v", len(got), got)
	}
	// UpdateMeta keeps the address; a region change is refused.
	meta := nodes[1].Self().Meta
	meta.RegionGossip, meta.Version = "", "test-2"
	if err := nodes[1].UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	if got := nodes[1].Self().RegionGossip; got != nodes[1].region.GossipAddr() {
		t.Errorf("after UpdateMeta p2 advertises %q, want %q", got, nodes[1].region.GossipAddr())
	}
	meta.Region = "ap"
	if err := nodes[1].UpdateMeta(meta); err == nil || !strings.Contains(err.Error(), "Region cannot change") {
		t.Errorf("UpdateMeta with another region: %v", err)
	}
}

// A proxy killed without leaving is taken out by the proxies of its
// region on their region pool's verdict, while the cluster pool (here
// half a minute slow) still lists it; the other region waits for the
// cluster pool.
func TestRegionPoolTakesOutItsDeadFirst(t *testing.T) {
	checkGoroutines(t)
	nodes := regionCluster(t)
	killed := time.Now()
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		e := n.waitEvent(t, "p3 dead", 15*time.Second, isEvent(EventLeave, "p3", ReasonDead))
		if e.Member.State != Dead || e.Member.Region != "eu" || e.Member.GossipAddr == "" {
			t.Errorf("%s: leave event %+v, want p3 of eu, dead, with its address", n.name, e.Member)
		}
		n.waitMembers(t, time.Second, "p1", "p2", "p4")
		n.mu.Lock()
		n.Membership.mu.Lock()
		_, listed := n.members["p3"]
		n.Membership.mu.Unlock()
		n.mu.Unlock()
		if !listed {
			t.Errorf("%s: the cluster pool had already declared p3 dead; the test cannot tell which pool decided", n.name)
		}
		t.Logf("%s took p3 out %v after it was killed", n.name, time.Since(killed).Round(10*time.Millisecond))
	}
	// The other region only has the cluster pool: p3 is still listed
	// there, and no event was raised.
	if !slices.Contains(nodes[3].memberIDs(), "p3") {
		t.Errorf("p4 (us) dropped p3 within %v: the cluster pool is set to take 30 s", time.Since(killed))
	}
	for _, e := range nodes[3].eventList() {
		if strings.HasPrefix(e, "leave:p3") {
			t.Errorf("p4 (us) saw %s", e)
		}
	}
}

// A region pool's false verdict (the proxy's region pool cut off while
// it runs, and the cluster pool sees it alive) is undone when the pool
// hears from it again: out with EventLeave, back with EventJoin, and
// never a second leave when the cluster pool follows.
func TestRegionPoolVerdictIsUndoneWhenTheProxyAnswers(t *testing.T) {
	checkGoroutines(t)
	var nodes []*node
	ids := []string{"p1", "p2", "p3"}
	var cut func() *cutTransport
	for i, id := range ids {
		o := []nodeOpt{slowClusterPool, inRegion("eu")}
		if i > 0 {
			o = append(o, withSeeds(nodes[0].GossipAddr()))
		}
		n := newNode(t, id, fmt.Sprintf("127.0.0.%d", i+1), o...)
		if id == "p3" {
			cut = withCutTransport(t, &node{Membership: n.region, name: "p3 region pool"}, time.Second)
		}
		nodes = append(nodes, n.start(t))
	}
	for _, n := range nodes {
		n.waitMembers(t, 15*time.Second, ids...)
		if !waitFor(15*time.Second, func() bool { return len(n.region.Members()) == 3 }) {
			t.Fatalf("%s: region pool members %v", n.name, n.region.Members())
		}
	}
	cut().setCut(true)
	for _, n := range nodes[:2] {
		n.waitEvent(t, "p3 out", 15*time.Second, isEvent(EventLeave, "p3", ReasonDead))
		n.waitMembers(t, time.Second, "p1", "p2")
	}
	time.Sleep(2 * time.Second) // let the region pools forget p3 (reap 1 s in p3's, 10 s in the others')
	cut().setCut(false)
	for _, n := range nodes[:2] {
		want := []string{"join:p3", "leave:p3(dead)", "join:p3"}
		var p3 []string
		waitFor(20*time.Second, func() bool {
			p3 = p3[:0]
			for _, e := range n.eventList() {
				if strings.Contains(e, ":p3") {
					p3 = append(p3, e)
				}
			}
			return len(p3) >= len(want)
		})
		if !slices.Equal(p3, want) {
			t.Errorf("%s saw %v, want %v", n.name, p3, want)
		}
		n.waitMembers(t, time.Second, ids...)
	}
}

// A graceful leave reaches the region by both pools; it is reported once.
func TestRegionPoolLeaveIsReportedOnce(t *testing.T) {
	checkGoroutines(t)
	nodes := regionCluster(t)
	if err := nodes[2].Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	for _, n := range nodes[:2] {
		n.waitEvent(t, "p3 left", 5*time.Second, isEvent(EventLeave, "p3", ReasonLeft))
		// Both pools have it now.
		if !waitFor(5*time.Second, func() bool {
			n.Membership.mu.Lock()
			defer n.Membership.mu.Unlock()
			_, listed := n.members["p3"]
			return !listed && !n.region.isMember("p3")
		}) {
			t.Fatalf("%s: p3 still listed by a pool 5 s after it left", n.name)
		}
		time.Sleep(200 * time.Millisecond) // an event queued by the second pool would be delivered by now
		var leaves int
		for _, e := range n.eventList() {
			if strings.HasPrefix(e, "leave:p3") {
				leaves++
			}
		}
		if leaves != 1 {
			t.Errorf("%s: %d leave events for p3, want 1: %v", n.name, leaves, n.eventList())
		}
	}
	nodes[3].waitEvent(t, "p3 left", 5*time.Second, isEvent(EventLeave, "p3", ReasonLeft))
}

// A proxy of another region that reaches a region's pool (it has the
// gossip key, but not the region) is refused there, both ways.
func TestRegionPoolRefusesOtherRegions(t *testing.T) {
	checkGoroutines(t)
	nodes := regionCluster(t)
	us, eu := nodes[3], nodes[0]
	if err := (&rejoiner{m: us.region, ml: us.region.ml}).join(eu.region.GossipAddr()); err != nil {
		t.Logf("join refused outright: %v", err)
	}
	// The join's push and pull made each side judge the other's proxies:
	// wait for both refusals, then look at the pools.
	if !waitFor(5*time.Second, func() bool {
		return eu.logs.find(slog.LevelDebug, "ignoring alive message", "p4") != "" &&
			us.logs.find(slog.LevelDebug, "ignoring alive message", "p1") != ""
	}) {
		t.Errorf("the region pools did not log refusing each other's proxies (eu refusing p4, us refusing p1)")
	}
	if eu.region.isMember("p4") {
		t.Errorf("eu's region pool let p4 (us) in: %v", eu.region.Members())
	}
	if got := us.region.Members(); len(got) != 1 {
		t.Errorf("us region pool took eu proxies in: %v", got)
	}
	// The cluster is intact.
	for _, n := range nodes {
		n.waitMembers(t, time.Second, "p1", "p2", "p3", "p4")
	}
}
