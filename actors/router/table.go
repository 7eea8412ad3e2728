package router

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/model"
)

// Table is the read side of the router: sessions read the latest Snapshot
// without a round trip to the router actor.
type Table struct{ p atomic.Pointer[Snapshot] }

// NewTable returns a Table holding an empty snapshot.
func NewTable() *Table {
	t := &Table{}
	t.p.Store(&Snapshot{Resources: map[string][]Endpoint{}, Agents: map[string]AgentRoute{}, Policy: access.Empty})
	return t
}

// StaticTable returns a Table that always holds s: for tests and tools
// that read routes without a router.
func StaticTable(s *Snapshot) *Table {
	t := &Table{}
	t.p.Store(s)
	return t
}

// Snapshot returns the current snapshot. It is immutable.
func (t *Table) Snapshot() *Snapshot { return t.p.Load() }

// Snapshot is an immutable view of routes and resources.
type Snapshot struct {
	Version uint64
	ProxyID string
	// Resources maps a resource name to every (agent, proxy) endpoint
	// that serves it, here and on other proxies, sorted by agent id.
	Resources map[string][]Endpoint
	// Agents are the agents whose tunnels are (or were) on this proxy.
	Agents map[string]AgentRoute
	// Routes are every agent tunnel known in the cluster, local and
	// remote, sorted by proxy and agent id.
	Routes []AgentRoute
	// Definitions are the dynamic resource definitions, sorted by name.
	Definitions []model.Definition
	// Policy is the access policy: roles, tokens, claims, locks.
	Policy *access.Policy
	// Synced is true once this proxy has had the routes and the
	// configuration of every peer alive when it started (or waited long
	// enough for them): until then it may refuse sessions it should serve
	// and admit users a newer lock refuses.
	Synced bool
}

// Endpoint is one agent serving one resource.
type Endpoint struct {
	model.Resource
	// Online is true while the agent has a live tunnel and its heartbeat
	// is fresh.
	Online bool
	// Tunnel is the tunnel actor that reaches the agent (on this proxy or
	// another); nil when offline.
	Tunnel *actor.PID
	// Local is true when the tunnel is on this proxy.
	Local bool
	// Connected is when the agent's tunnel came up.
	Connected time.Time
	// Region is the region of the proxy holding the tunnel.
	Region string
	// RTT is the tunnel's keepalive round trip, measured by the proxy
	// holding it (0 until measured).
	RTT time.Duration
}

// Usable reports whether a new session may be sent to e.
func (e Endpoint) Usable() bool { return e.Online && e.Healthy && e.Tunnel != nil }

// AgentRoute is the route to one agent through one proxy.
type AgentRoute struct {
	model.Agent
	Online bool
	Tunnel *actor.PID
	Local  bool
}

// Lookup resolves the virtual identity resource/<name>: every endpoint
// serving it.
func (s *Snapshot) Lookup(name string) []Endpoint { return s.Resources[name] }

// List summarises every resource, sorted by name; each name appears once.
func (s *Snapshot) List() []model.Summary {
	out := make([]model.Summary, 0, len(s.Resources))
	for name, eps := range s.Resources {
		out = append(out, summarize(name, eps))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Summaries summarises the named resources, in the order given; names
// no agent serves are left out. It costs O(len(names)), where List costs
// O(resources): a client that watches a few names among thousands asks
// for these.
func (s *Snapshot) Summaries(names []string) []model.Summary {
	out := make([]model.Summary, 0, len(names))
	for _, name := range names {
		if eps, ok := s.Resources[name]; ok {
			out = append(out, summarize(name, eps))
		}
	}
	return out
}

// summarize is one resource's line of a listing.
func summarize(name string, eps []Endpoint) model.Summary {
	sum := model.Summary{Name: name, Status: model.StatusOffline}
	online := 0
	agents, healthy := map[string]bool{}, map[string]bool{}
	for _, e := range eps {
		if sum.Kind == "" || e.Usable() {
			sum.Kind, sum.Labels, sum.Port = e.Kind, e.Labels, e.Port
		}
		agents[e.AgentID] = true
		if e.Online {
			online++
		}
		if e.Usable() {
			healthy[e.AgentID] = true
		} else if e.Online && sum.Detail == "" {
			sum.Detail = e.Detail
		}
	}
	sum.Agents, sum.Healthy = len(agents), len(healthy)
	switch {
	case sum.Healthy > 0:
		sum.Status, sum.Detail = model.StatusOnline, ""
	case online > 0:
		sum.Status = model.StatusUnhealthy
	}
	return sum
}
