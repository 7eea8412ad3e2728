package agent

import (
	"slices"
	"sort"
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
type directory struct {
	region string
	seeds  []string

	mu      sync.Mutex // guards the fields below
	proxies map[string]revtunnel.ProxyInfo
	held    map[string]string    // slot → proxy id it is connected to
	failed  map[string]time.Time // proxy id or address → last failure
	next    int                  // round-robin over seeds
}

func newDirectory(region string, seeds []string) *directory {
	return &directory{region: region, seeds: seeds, proxies: map[string]revtunnel.ProxyInfo{}, held: map[string]string{}, failed: map[string]time.Time{}}
}

// failMemory is how long a failed proxy is avoided when others exist.
const failMemory = 10 * time.Second

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
	}
	d.proxies = next
	return changed
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

// pick chooses the address a peering slot dials next: a known proxy that
// no other slot holds and that has not failed lately, preferring the
// agent's region and then zones no other slot uses; with none known, the
// seeds in turn.
func (d *directory) pick(slot string, now time.Time) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	heldIDs, heldZones := map[string]bool{}, map[string]bool{}
	for s, id := range d.held {
		if s != slot {
			heldIDs[id] = true
			heldZones[d.proxies[id].Zone] = true
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
		if heldIDs[p.ID] {
			continue
		}
		score := 0
		if now.Sub(d.failed[p.ID]) > failMemory {
			score += 4
		}
		if d.region == "" || p.Region == d.region {
			score += 2
		}
		if !heldZones[p.Zone] {
			score++
		}
		if score > bestScore {
			bestScore, best = score, &p
		}
	}
	d.next++
	if best != nil {
		return best.TunnelAddr
	}
	return d.seeds[d.next%len(d.seeds)]
}

// hold records that slot is connected to proxy id; it reports false when
// another slot holds that proxy already (the slot must go elsewhere).
func (d *directory) hold(slot, id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for s, h := range d.held {
		if s != slot && h == id {
			return false
		}
	}
	d.held[slot] = id
	return true
}

func (d *directory) release(slot string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.held, slot)
}

// fail remembers a failed proxy (by id when known, else by address).
func (d *directory) fail(key string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failed[key] = now
}

// holders returns the proxy ids held by any slot.
func (d *directory) holders() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, id := range d.held {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
