package model

import "time"

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

// LiveSession is one session running through a proxy, as its status page
// shows it: who reaches what, through which path, since when. It holds no
// secret.
type LiveSession struct {
	ID       string `json:"id"`
	User     string `json:"user"`
	Login    string `json:"login,omitempty"` // the login the node let the user take, once reported
	Resource string `json:"resource"`
	Agent    string `json:"agent"`
	// Path is proxy>agent for a tunnel on the entry proxy, proxy>peer>agent
	// through a peer; a resumed session's newest hop.
	Path    string    `json:"path"`
	Started time.Time `json:"started"`
	Resumes int       `json:"resumes,omitempty"` // hops replaced so far
}

// Failover kinds.
const (
	// FailoverConnect: a candidate failed while the session connected, and
	// another served it.
	FailoverConnect = "connect"
	// FailoverResume: a running session lost its path to the agent and
	// resumed over a new one.
	FailoverResume = "resume"
)

// Failover is one session that moved: from a candidate that failed to the
// one that served it, or from a broken path to its new one.
type Failover struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"` // FailoverConnect or FailoverResume
	Session  string    `json:"session"`
	Resource string    `json:"resource"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Reason   string    `json:"reason,omitempty"`
}

// AgentLine is one agent route as the status page shows it.
type AgentLine struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname,omitempty"`
	Version   string    `json:"version,omitempty"`
	ProxyID   string    `json:"proxy_id"`
	Online    bool      `json:"online"`
	Local     bool      `json:"local"`
	Connected time.Time `json:"connected"`
	LastSeen  time.Time `json:"last_seen"`
	Resources int       `json:"resources"`
}

// Overview is everything a proxy's status page shows, in one answer.
type Overview struct {
	Proxy     string        `json:"proxy"`
	Region    string        `json:"region,omitempty"`
	Time      time.Time     `json:"time"`
	Members   Statuses      `json:"members"`
	Agents    []AgentLine   `json:"agents"`
	Resources []Summary     `json:"resources"`
	Sessions  []LiveSession `json:"sessions"`
	Failovers []Failover    `json:"failovers"`
}
