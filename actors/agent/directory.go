package agent

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Tunnel strategies.
const (
	// StrategyPeering keeps ConnectionCount tunnels to distinct proxies;
	// proxies reach the agent through each other.
	StrategyPeering = "proxy_peering"
	// StrategyMesh keeps one tunnel to every proxy.
	StrategyMesh = "agent_mesh"
)

// directory is what the agent knows of the proxies: the configured seed
// addresses (proxies or a load balancer), the proxy set the proxies send,
// which tunnel slot holds which proxy, and recent failures. Connection
// actors consult it from their goroutines.
//
// A slot claims a proxy before it says hello there (claim, from the
// tunnel's BeforeHello) and keeps it until its tunnel ends (release). The
// claim must come first: the hello is what makes a proxy route to the
// tunnel, superseding any other tunnel of this agent there, so a second
// hello to a held proxy would knock the holder's tunnel off.
type directory struct {
	region string
	seeds  []string

	mu      sync.Mutex // guards the fields below
	proxies map[string]revtunnel.ProxyInfo
	held    map[string]holding   // slot → the proxy it claimed
	failed  map[string]time.Time // proxy id or address → last failure
	since   map[string]time.Time // slot → when its tunnel came up
	leaving map[string]time.Time // proxy id or address → when it said it is shutting down
	rtt     *rtts                // the prober's measurements
	next    int                  // round-robin over seeds
	// changed is closed, and replaced, when the proxy set changes: slots
	// waiting for a proxy of their own wake on it.
	changed chan struct{}
}

// holding is a slot's claim on a proxy.
type holding struct {
	id string
	up bool // the tunnel is up; false while its hello is under way
}

func newDirectory(region string, seeds []string, rule homeRule) *directory {
	return &directory{
		region: region, seeds: seeds,
		proxies: map[string]revtunnel.ProxyInfo{}, held: map[string]holding{}, failed: map[string]time.Time{},
		since: map[string]time.Time{}, leaving: map[string]time.Time{}, rtt: newRTTs(rule),
		changed: make(chan struct{}),
	}
}

// failMemory is how long a failed proxy is avoided when others exist.
const failMemory = 10 * time.Second

// leaveMemory is how long a proxy that said it is shutting down is not
// chosen: long enough to cover its shutdown (its hand-off, at most 5 s,
// and its leave of the gossip), while proxy sets from its peers may still
// list it; short enough that a proxy restarted in a rolling upgrade is
// soon chosen again.
const leaveMemory = 10 * time.Second

// left records that a proxy said it is shutting down, by its id or the
// address its tunnel was dialled at (keys; "" is skipped).
func (d *directory) left(now time.Time, keys ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		if k != "" {
			d.leaving[k] = now
		}
	}
}

// isLeaving reports whether the proxy of id or address key said it is
// shutting down within leaveMemory. Called with d.mu held.
func (d *directory) isLeaving(key string, now time.Time) bool {
	at, ok := d.leaving[key]
	if ok && now.Sub(at) > leaveMemory {
		delete(d.leaving, key)
		return false
	}
	return ok
}

// update replaces the proxy set; it reports whether it changed.
func (d *directory) update(set []revtunnel.ProxyInfo) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := make(map[string]revtunnel.ProxyInfo, len(set))
	for _, p := range set {
		if p.ID != "" && p.TunnelAddr != "" {
			next[p.ID] = p
		}
	}
	changed := len(next) != len(d.proxies)
	for id, p := range next {
		if d.proxies[id] != p {
			changed = true
		}
		if _, known := d.proxies[id]; !known {
			// Back in the set after it left it: a proxy that said it
			// was shutting down has restarted (a rolling upgrade), and
			// may be chosen again at once.
			delete(d.leaving, id)
			delete(d.leaving, p.TunnelAddr)
		}
	}
	d.proxies = next
	ids := make(map[string]bool, len(next))
	for id := range next {
		ids[id] = true
	}
	d.rtt.keep(ids)
	if changed {
		close(d.changed)
		d.changed = make(chan struct{})
	}
	return changed
}

// changes returns a channel that is closed at the next change of the
// proxy set. A slot takes it before pick, so that a change between its
// pick and its wait is not missed.
func (d *directory) changes() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// known returns the proxy set, sorted by id.
func (d *directory) known() []revtunnel.ProxyInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]revtunnel.ProxyInfo, 0, len(d.proxies))
	for _, p := range d.proxies {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// pick chooses the address a peering slot dials next, or "" when there is
// none to dial: every known proxy is held by another slot, and another
// tunnel to one of them would supersede that slot's. The slot then waits
// for the proxy set to change.
//
// With the proxy set known, it is a proxy no other slot holds, preferring
// one that has not failed lately (nor its last probe), the agent's region,
// zones no other slot uses, and then the lowest measured round trip. When
// every such proxy failed lately, a seed that is no known
// proxy's address comes first: the proxies' own addresses may be
// unreachable from here (a load balancer in front of them), or their
// processes gone. With no proxy set yet, the seeds in turn from the
// first: an operator lists the nearest first (its own region's), and
// the slots of a starting agent pick before any proxy told them the set.
func (d *directory) pick(slot string, now time.Time) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	turn := d.next
	d.next++
	if len(d.proxies) == 0 {
		return d.seeds[turn%len(d.seeds)]
	}
	heldIDs, heldZones := map[string]bool{}, map[string]bool{}
	for s, h := range d.held {
		if s != slot {
			heldIDs[h.id] = true
			heldZones[d.proxies[h.id].Zone] = true
		}
	}
	var best *revtunnel.ProxyInfo
	bestScore := -1
	ids := make([]string, 0, len(d.proxies))
	for id := range d.proxies {
		ids = append(ids, id)
	}
	// Spread agents: start the scan at a rotating offset.
	sort.Strings(ids)
	for i := range ids {
		p := d.proxies[ids[(i+d.next)%len(ids)]]
		if heldIDs[p.ID] || d.isLeaving(p.ID, now) || d.isLeaving(p.TunnelAddr, now) {
			continue
		}
		score := 0
		if !d.shunned(p, now) && !d.rtt.failing(p.ID) {
			score += 4
		}
		if d.region == "" || p.Region == d.region {
			score += 2
		}
		if !heldZones[p.Zone] {
			score++
		}
		if score > bestScore || score == bestScore && d.nearer(p.ID, best.ID, now) {
			bestScore, best = score, &p
		}
	}
	if best == nil {
		return ""
	}
	if bestScore < 4 {
		addrs := map[string]bool{}
		for _, p := range d.proxies {
			addrs[p.TunnelAddr] = true
		}
		for i := range d.seeds {
			if s := d.seeds[(d.next+i)%len(d.seeds)]; !addrs[s] && now.Sub(d.failed[s]) > failMemory && !d.isLeaving(s, now) {
				return s
			}
		}
	}
	return best.TunnelAddr
}

// errTaken is the refusal of a claim on a proxy another slot holds.
var errTaken = errors.New("another tunnel slot holds this proxy")

// claim records that slot is about to say hello to proxy id, before it
// does; it fails when another slot holds that proxy (the slot must go
// elsewhere, or wait).
func (d *directory) claim(slot, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for s, h := range d.held {
		if s != slot && h.id == id {
			return fmt.Errorf("%w: slot %s", errTaken, s)
		}
	}
	d.held[slot] = holding{id: id}
	return nil
}

// up records that slot's tunnel to the proxy it claimed is up.
func (d *directory) up(slot string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h, ok := d.held[slot]; ok {
		h.up = true
		d.held[slot] = h
		d.since[slot] = now
	}
}

// holding returns the proxy slot has claimed, or "".
func (d *directory) holding(slot string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held[slot].id
}

// release gives up slot's claim.
func (d *directory) release(slot string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.held, slot)
	delete(d.since, slot)
}

// dialable reports whether addr is still an address to dial: a known
// proxy's, or a seed.
func (d *directory) dialable(addr string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.proxies {
		if p.TunnelAddr == addr {
			return true
		}
	}
	return slices.Contains(d.seeds, addr)
}

// fail remembers a failed proxy (by id when known, else by address).
func (d *directory) fail(key string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failed[key] = now
}

// holders returns the ids of the proxies to which a slot has a tunnel up.
func (d *directory) holders() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, h := range d.held {
		if h.up {
			out = append(out, h.id)
		}
	}
	slices.Sort(out)
	return out
}

// observe records a probe of proxy id (rtt < 0: it did not answer).
func (d *directory) observe(id string, rtt time.Duration, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.proxies[id]; ok {
		d.rtt.observe(id, rtt, now)
	}
}

// shunned reports whether p failed (a tunnel there ended or could not be
// opened) in the last failMemory, and has not answered a probe since.
// Called with d.mu held.
func (d *directory) shunned(p revtunnel.ProxyInfo, now time.Time) bool {
	for _, key := range []string{p.ID, p.TunnelAddr} {
		if at, ok := d.failed[key]; ok && now.Sub(at) <= failMemory && !d.rtt.answeredSince(p.ID, at) {
			return true
		}
	}
	return false
}

// nearer reports whether proxy a measures nearer than proxy b (a proxy
// not measured is farther than any measured). Called with d.mu held.
func (d *directory) nearer(a, b string, now time.Time) bool {
	ra, okA := d.rtt.latency(a, now)
	rb, okB := d.rtt.latency(b, now)
	return okA && (!okB || ra < rb)
}

// Suffixes of the claims a moving slot makes besides its own: the proxy
// it moves to while its tunnel there comes up, and the proxy it leaves
// while the sessions in flight there end.
const (
	nextSuffix     = "/next"
	retiringSuffix = "/retiring/"
)

// move tells a peering slot whose tunnel is up where to move, by the home
// rule: back to the agent's region when a proxy there answers again (a
// settled one, in a zone no other slot uses if there is one), or within
// its tier to a proxy clearly nearer than its own, or to a free zone of
// its region about as near (within max(MinGain, 20%)) when its own zone
// is shared with another slot. It returns "" to stay. A slot stays at
// least Dwell on a proxy, and never moves to one another claim holds.
func (d *directory) move(slot string, now time.Time) (addr, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.held[slot]
	if !ok || !h.up || now.Sub(d.since[slot]) < d.rtt.rule.Dwell {
		return "", ""
	}
	cur, ok := d.proxies[h.id]
	if !ok {
		return "", "" // it left the set: its tunnel ends soon
	}
	curRTT, curOK := d.rtt.latency(cur.ID, now)
	home := func(p revtunnel.ProxyInfo) bool { return d.region == "" || p.Region == d.region }
	heldIDs, otherZones := map[string]bool{}, map[string]bool{}
	for s, o := range d.held {
		heldIDs[o.id] = true
		if s != slot && !strings.Contains(s, "/") {
			otherZones[d.proxies[o.id].Zone] = true
		}
	}
	// Reasons to move, weakest first.
	const (
		none       = iota
		zone       // a zone of its own, about as near
		nearer     // clearly nearer, same tier
		homeShared // home to the region, a zone another slot uses
		homeFree   // home to the region, a zone of its own
	)
	var best *revtunnel.ProxyInfo
	bestWhy, bestRTT := none, time.Duration(0)
	for _, p := range d.proxies {
		if heldIDs[p.ID] || d.shunned(p, now) || !d.rtt.settled(p.ID, now) || d.isLeaving(p.ID, now) {
			continue
		}
		rtt, _ := d.rtt.latency(p.ID, now)
		why := none
		switch {
		case home(p) && !home(cur) && otherZones[p.Zone]:
			why = homeShared
		case home(p) && !home(cur):
			why = homeFree
		case home(p) != home(cur) || !curOK:
		case otherZones[p.Zone] && !otherZones[cur.Zone]:
			// Never give up a zone of its own for a nearer proxy.
		case d.rtt.rule.clearlyBetter(rtt, curRTT):
			why = nearer
		case home(p) && otherZones[cur.Zone] && !otherZones[p.Zone] &&
			rtt <= max(curRTT+d.rtt.rule.MinGain, curRTT*6/5):
			why = zone
		}
		if why > bestWhy || why == bestWhy && why != none && rtt < bestRTT {
			best, bestWhy, bestRTT = &p, why, rtt
		}
	}
	if best == nil {
		return "", ""
	}
	return best.TunnelAddr, best.ID
}

// promote makes the claim slot made for its move (nextSuffix) the slot's
// own, up since now, and keeps the proxy it leaves claimed under a
// retiring name, returned, until its sessions end (release it then).
func (d *directory) promote(slot string, now time.Time) (retiring string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.held[slot]
	retiring = slot + retiringSuffix + old.id
	d.held[retiring] = holding{id: old.id}
	d.held[slot] = holding{id: d.held[slot+nextSuffix].id, up: true}
	delete(d.held, slot+nextSuffix)
	d.since[slot] = now
	return retiring
}
