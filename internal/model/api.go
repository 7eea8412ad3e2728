package model

// The JSON shapes of the proxy's answers that clients decode (`warren`,
// the benchmarks): the HTTP API and the user port's --json commands.

// MemberStatus is one proxy as `warren status` shows it.
type MemberStatus struct {
	ID          string  `json:"id"`
	Region      string  `json:"region"`
	Zone        string  `json:"zone,omitempty"`
	State       string  `json:"state"`
	Version     string  `json:"version,omitempty"`
	LocalAgents int     `json:"local_agents"`
	Routes      int     `json:"routes"`
	Link        string  `json:"link"` // "self", "ok" or the error
	RTTMillis   float64 `json:"rtt_ms,omitempty"`
	// Redacted is set when the counts are withheld: only administrators
	// see how many agents and routes each proxy holds.
	Redacted bool `json:"redacted,omitempty"`
	// HostKey and UserAddr are the proxy's plain SSH host key and where
	// users reach it (for `warren known-hosts`).
	HostKey  string `json:"host_key,omitempty"`
	UserAddr string `json:"user_addr,omitempty"`
	// HTTPAddr is where the proxy serves /readyz (for `warren connect`).
	HTTPAddr string `json:"http_addr,omitempty"`
}

// Statuses are the cluster's members as `warren status` shows them.
type Statuses []MemberStatus

// ForUser withholds what only administrators see: the counts of agents
// and routes.
func (sts Statuses) ForUser() Statuses {
	out := make(Statuses, len(sts))
	for i, s := range sts {
		s.LocalAgents, s.Routes, s.Redacted = 0, 0, true
		out[i] = s
	}
	return out
}

// Resource states in a Summary.
const (
	StatusOnline    = "online"
	StatusUnhealthy = "unhealthy"
	StatusOffline   = "offline"
)

// Summary is one line of a resource listing.
type Summary struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"`
	Port    int               `json:"port,omitempty"` // a tcp resource's port
	Labels  map[string]string `json:"labels,omitempty"`
	Agents  int               `json:"agents"`  // agents that serve the name
	Healthy int               `json:"healthy"` // of which usable now
	Status  string            `json:"status"`  // StatusOnline, StatusUnhealthy or StatusOffline
	Detail  string            `json:"detail,omitempty"`
}
