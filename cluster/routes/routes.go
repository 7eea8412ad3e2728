// Package routes is the replicated route table's state machine: what one
// proxy knows of the routes other proxies hold, and the rules that keep it
// right when updates are lost, duplicated, reordered or late.
//
// Each proxy (an origin) is the only authority for the tunnels it holds.
// It numbers its changes within an epoch (a value fixed at its start):
// RouteDelta 1, 2, 3 … and can send its whole RouteState at any time.
//
// Rules, in order:
//   - Nothing from an origin is accepted unless membership says it is alive
//     (MemberAlive), so a late message from a dead proxy never resurrects
//     its routes. MemberGone drops every route of the origin at once.
//   - After MemberAlive the origin needs a full state first; deltas are
//     ignored (and a sync requested) until one arrives.
//   - A state replaces the origin's routes when it is newer than what was
//     applied ((epoch, seq) ordering), or when a sync is pending and it is
//     not older than the current epoch.
//   - A delta applies only as the next one: same epoch and seq = applied+1.
//     An older or duplicate delta is dropped; a newer epoch or a gap asks
//     for a sync.
package routes

import (
	"sort"

	"github.com/warren-proxy/warren/cluster/clusterpb"
)

// Result says what an update did.
type Result int

const (
	// Ignored: stale, duplicate, or from an origin that is not alive.
	Ignored Result = iota
	// Applied: the table changed.
	Applied
	// NeedSync: the update could not be applied; ask the origin for its
	// full state.
	NeedSync
)

func (r Result) String() string {
	return [...]string{"ignored", "applied", "need-sync"}[r]
}

type origin struct {
	alive  bool
	synced bool // a full state has been applied since MemberAlive
	epoch  uint64
	seq    uint64
	agents map[string]*clusterpb.AgentRoute
}

// Table holds other proxies' routes. It is not safe for concurrent use;
// the router actor owns it.
type Table struct {
	origins map[string]*origin
}

// New returns an empty table.
func New() *Table { return &Table{origins: map[string]*origin{}} }

func (t *Table) get(id string) *origin {
	o := t.origins[id]
	if o == nil {
		o = &origin{agents: map[string]*clusterpb.AgentRoute{}}
		t.origins[id] = o
	}
	return o
}

// MemberAlive marks an origin alive; its routes are accepted again once a
// full state arrives. It reports whether the origin was not alive before.
func (t *Table) MemberAlive(id string) bool {
	o := t.get(id)
	if o.alive {
		return false
	}
	o.alive, o.synced = true, false
	return true
}

// MemberGone drops every route of an origin and ignores it until it is
// alive again. It reports whether any route was dropped.
func (t *Table) MemberGone(id string) bool {
	o := t.origins[id]
	if o == nil {
		return false
	}
	dropped := len(o.agents) > 0
	o.alive, o.synced = false, false
	o.agents = map[string]*clusterpb.AgentRoute{}
	return dropped
}

// Alive reports whether an origin is alive.
func (t *Table) Alive(id string) bool {
	o := t.origins[id]
	return o != nil && o.alive
}

// ApplyState applies an origin's full state.
func (t *Table) ApplyState(s *clusterpb.RouteState) Result {
	o := t.origins[s.Origin]
	if o == nil || !o.alive {
		return Ignored
	}
	newer := s.Epoch > o.epoch || (s.Epoch == o.epoch && s.Seq > o.seq)
	if !newer && !(!o.synced && s.Epoch >= o.epoch && !(s.Epoch == o.epoch && s.Seq < o.seq)) {
		return Ignored
	}
	o.epoch, o.seq, o.synced = s.Epoch, s.Seq, true
	o.agents = make(map[string]*clusterpb.AgentRoute, len(s.Agents))
	for _, a := range s.Agents {
		o.agents[a.AgentId] = a
	}
	return Applied
}

// ApplyDelta applies an origin's delta.
func (t *Table) ApplyDelta(d *clusterpb.RouteDelta) Result {
	o := t.origins[d.Origin]
	if o == nil || !o.alive {
		return Ignored
	}
	switch {
	case !o.synced:
		return NeedSync
	case d.Epoch < o.epoch:
		return Ignored
	case d.Epoch > o.epoch:
		return NeedSync
	case d.Seq <= o.seq:
		return Ignored
	case d.Seq > o.seq+1, d.Beacon:
		return NeedSync
	}
	o.seq = d.Seq
	for _, a := range d.Upserts {
		o.agents[a.AgentId] = a
	}
	for _, id := range d.Removals {
		delete(o.agents, id)
	}
	return Applied
}

// Origins lists the alive origins, sorted.
func (t *Table) Origins() []string {
	var out []string
	for id, o := range t.origins {
		if o.alive {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Agents calls f for every route of every alive origin.
func (t *Table) Agents(f func(origin string, a *clusterpb.AgentRoute)) {
	for id, o := range t.origins {
		if !o.alive {
			continue
		}
		for _, a := range o.agents {
			f(id, a)
		}
	}
}

// Count returns the number of routes held for an origin.
func (t *Table) Count(id string) int {
	if o := t.origins[id]; o != nil && o.alive {
		return len(o.agents)
	}
	return 0
}

// Version returns the (epoch, seq) applied for an origin.
func (t *Table) Version(id string) (epoch, seq uint64) {
	if o := t.origins[id]; o != nil {
		return o.epoch, o.seq
	}
	return 0, 0
}
