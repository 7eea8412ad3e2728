package router

import (
	"sort"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-proxy/warren/storage/catalog"
)

// Table is the read side of the router: sessions read the latest Snapshot
// without a round trip to the router actor.
type Table struct{ p atomic.Pointer[Snapshot] }

// NewTable returns a Table holding an empty snapshot.
func NewTable() *Table {
	t := &Table{}
	t.p.Store(&Snapshot{Resources: map[string][]Endpoint{}, Agents: map[string]AgentRoute{}})
	return t
}

// Snapshot returns the current snapshot. It is immutable.
func (t *Table) Snapshot() *Snapshot { return t.p.Load() }

// Snapshot is an immutable view of routes and resources.
type Snapshot struct {
	Version   uint64
	Resources map[string][]Endpoint // by resource name, sorted by agent id
	Agents    map[string]AgentRoute
}

// Endpoint is one agent serving one resource.
type Endpoint struct {
	catalog.Resource
	// Online is true while the agent has a live tunnel and its heartbeat
	// is fresh.
	Online bool
	// Tunnel is the tunnel actor that reaches the agent; nil when offline.
	Tunnel *actor.PID
}

// Usable reports whether a new session may be sent to e.
func (e Endpoint) Usable() bool { return e.Online && e.Healthy && e.Tunnel != nil }

// AgentRoute is the route to one agent.
type AgentRoute struct {
	catalog.Agent
	Online bool
	Tunnel *actor.PID
}

// Lookup returns the endpoints of a resource name.
func (s *Snapshot) Lookup(name string) []Endpoint { return s.Resources[name] }

// Summary is one line of a resource listing.
type Summary struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"`
	Labels  map[string]string `json:"labels,omitempty"`
	Agents  int               `json:"agents"`  // agents that serve the name
	Healthy int               `json:"healthy"` // of which usable now
	Status  string            `json:"status"`  // "online", "unhealthy", "offline"
	Detail  string            `json:"detail,omitempty"`
}

// List summarises every resource, sorted by name; each name appears once.
func (s *Snapshot) List() []Summary {
	out := make([]Summary, 0, len(s.Resources))
	for name, eps := range s.Resources {
		sum := Summary{Name: name, Agents: len(eps), Status: "offline"}
		online := 0
		for _, e := range eps {
			if sum.Kind == "" || e.Usable() {
				sum.Kind, sum.Labels = e.Kind, e.Labels
			}
			if e.Online {
				online++
			}
			if e.Usable() {
				sum.Healthy++
			} else if e.Online && sum.Detail == "" {
				sum.Detail = e.Detail
			}
		}
		switch {
		case sum.Healthy > 0:
			sum.Status, sum.Detail = "online", ""
		case online > 0:
			sum.Status = "unhealthy"
		}
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
