package revtunnel

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/warren-proxy/warren/internal/model"
)

// Request and channel type names.
const (
	ReqJoin      = "join@warren.dev"
	ReqHello     = "hello@warren.dev"
	ReqHeartbeat = "heartbeat@warren.dev"
	ReqKeepalive = "keepalive@openssh.com"
	ReqLogin     = "login@warren.dev"
	ReqRenew     = "renew@warren.dev"
	ReqProxies   = "proxies@warren.dev"
	ChanDial     = "dial@warren.dev"

	// JoinUser is the SSH user name of a join connection.
	JoinUser = "join"
	// MaxPayload bounds every request payload we decode: a heartbeat of
	// MaxResources resources with their labels fits well within it.
	MaxPayload = 256 << 10
	// MaxLoginPayload bounds a login report: a valid one, with every
	// character of its key id escaped by the JSON encoder, fits.
	MaxLoginPayload = 4 << 10
)

// Caps on what one agent may publish: every resource and label is
// replicated to every proxy.
const (
	// MaxResources is the most resources one heartbeat may carry.
	MaxResources = 256
	// MaxLabelBytes is the most label bytes (keys and values) one
	// heartbeat may carry over all its resources.
	MaxLabelBytes = 32 << 10
	// maxDetail bounds a resource's health detail.
	maxDetail = 256
)

// JoinRequest is the payload of ReqJoin.
type JoinRequest struct {
	// Name is the id the agent asks for; the proxy may refuse it or pick
	// one when it is empty.
	Name      string `json:"name,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
	PublicKey string `json:"public_key"` // authorized_keys format
	// Principals are extra host names for the certificate (the agent's
	// ssh resource names), so clients can check the node by the name
	// they dialled.
	Principals []string `json:"principals,omitempty"`
}

// JoinResponse answers ReqJoin.
type JoinResponse struct {
	AgentID  string `json:"agent_id"`
	HostCert string `json:"host_cert"` // authorized_keys format
	// UserCA is the cluster user CA (authorized_keys format): the agent's
	// SSH server accepts user certificates from it.
	UserCA string `json:"user_ca"`
	// Refused are the requested names the certificate does not hold:
	// outside the token's grant, or already another agent's.
	Refused []Refused `json:"refused,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// Hello is the payload of ReqHello, sent once per tunnel.
type Hello struct {
	Version    string   `json:"version"`
	Hostname   string   `json:"hostname,omitempty"`
	Principals []string `json:"principals,omitempty"`
	// HostKeys are the plain host keys the agent's SSH server offers
	// (authorized_keys lines), for `warren known-hosts`.
	HostKeys []string `json:"host_keys,omitempty"`
}

// HeartbeatReply answers ReqHeartbeat when the proxy accepted the
// heartbeat: the resources it refused (outside the agent's grant), if any.
// The others are served.
type HeartbeatReply struct {
	Refused []Refused `json:"refused,omitempty"`
}

// Refused is one resource a proxy will not route to this agent, and why.
type Refused struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// RenewReply answers ReqRenew: a fresh host certificate, or why not.
type RenewReply struct {
	HostCert string `json:"host_cert,omitempty"`
	Error    string `json:"error,omitempty"`
}

// HelloReply answers ReqHello.
type HelloReply struct {
	ProxyID  string `json:"proxy_id"`
	Region   string `json:"region,omitempty"`
	HostCert string `json:"host_cert,omitempty"` // renewed certificate
	// Proxies is the tunnel address of every proxy the agent may use.
	Proxies []ProxyInfo `json:"proxies,omitempty"`
	// Definitions are the cluster's dynamic resource definitions.
	Definitions []model.Definition `json:"definitions,omitempty"`
	// Policy is what the agent's SSH server checks logins against: the
	// cluster's roles, as the proxies hold them (see PolicySet).
	Policy *PolicySet `json:"policy,omitempty"`
	Error  string     `json:"error,omitempty"`
}

// ReqPolicy is sent by a proxy to its agents (PolicySet, no reply)
// whenever the cluster's roles or locks change.
const ReqPolicy = "policy@warren.dev"

// PolicySet is the payload of ReqPolicy: the roles and the locks as JSON
// arrays, which this package carries without reading (the access package
// owns them).
type PolicySet struct {
	Roles json.RawMessage `json:"roles"`
	Locks json.RawMessage `json:"locks,omitempty"`
}

// ProxyInfo describes one proxy to an agent.
type ProxyInfo struct {
	ID         string `json:"id"`
	Region     string `json:"region,omitempty"`
	Zone       string `json:"zone,omitempty"`
	TunnelAddr string `json:"tunnel_addr"`
}

// ProxySet is the payload of ReqProxies, sent by a proxy to its agents
// whenever the cluster's proxies change.
type ProxySet struct {
	Proxies []ProxyInfo `json:"proxies"`
	// Leaving says the proxy sending the set is shutting down (the set
	// leaves it out): the agent opens a tunnel to another proxy first, then
	// withdraws its routes from this one, whose sessions in flight end on
	// their own (make before break). Older agents ignore it, and reconnect
	// once the tunnel closes.
	Leaving bool `json:"leaving,omitempty"`
}

// Heartbeat is the payload of ReqHeartbeat: the whole set of resources the
// agent serves right now. A resource missing from a heartbeat is withdrawn.
type Heartbeat struct {
	Seq       uint64           `json:"seq"`
	Resources []ResourceStatus `json:"resources"`
}

// ResourceStatus is one resource in a heartbeat.
type ResourceStatus struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Port is a tcp resource's upstream port, for roles that allow ports.
	Port    int               `json:"port,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Healthy bool              `json:"healthy"`
	Detail  string            `json:"detail,omitempty"`
}

// Login is the payload of ReqLogin: the agent's SSH server tells the proxy
// which login a session's user took, for the audit log.
type Login struct {
	SessionID string `json:"session_id"`
	Login     string `json:"login"`
	KeyID     string `json:"key_id,omitempty"`
	// Refused, if set, is why the agent's SSH server refused the login.
	Refused string `json:"refused,omitempty"`
}

// DialRequest is the extra data of a ChanDial channel.
type DialRequest struct {
	SessionID  string `json:"session_id"`
	Resource   string `json:"resource"`
	Port       uint32 `json:"port,omitempty"`
	User       string `json:"user,omitempty"`
	ClientAddr string `json:"client_addr,omitempty"`
	// Resume is ResumeStart or ResumeAgain for a resumable session
	// (transport/resume), empty for a plain stream.
	Resume string `json:"resume,omitempty"`
	// Ticket, if set, lets the agent upload the session's recordings to
	// any proxy (see recording.go).
	Ticket string `json:"ticket,omitempty"`
}

// DialRequest.Resume values: the first hop of a resumable session, whose
// channel begins with the entry proxy's Hello, and a later hop of one the
// agent holds.
const (
	ResumeStart = "start"
	ResumeAgain = "resume"
)

// Validate checks a heartbeat's contents and its size: at most
// MaxResources resources and MaxLabelBytes of labels.
func (h Heartbeat) Validate() error {
	if len(h.Resources) > MaxResources {
		return fmt.Errorf("%d resources; one agent may serve at most %d", len(h.Resources), MaxResources)
	}
	seen := make(map[string]bool, len(h.Resources))
	labelBytes := 0
	for i, r := range h.Resources {
		if !model.ValidName(r.Name) {
			return fmt.Errorf("resources[%d]: invalid name %s", i, model.Quote(r.Name))
		}
		if r.Kind != model.KindSSH && r.Kind != model.KindTCP {
			return fmt.Errorf("resources[%d] %s: unknown kind %s (want ssh or tcp)", i, r.Name, model.Quote(r.Kind))
		}
		if seen[r.Name] {
			return fmt.Errorf("resources[%d]: duplicate name %q", i, r.Name)
		}
		seen[r.Name] = true
		if err := model.CheckLabels(r.Labels); err != nil {
			return fmt.Errorf("resources[%d] %s: %w", i, r.Name, err)
		}
		if labelBytes += model.LabelBytes(r.Labels); labelBytes > MaxLabelBytes {
			return fmt.Errorf("resources carry more than %d bytes of labels", MaxLabelBytes)
		}
		if len(r.Detail) > maxDetail {
			return fmt.Errorf("resources[%d] %s: health detail of %d bytes; at most %d", i, r.Name, len(r.Detail), maxDetail)
		}
		if r.Port < 0 || r.Port > 65535 {
			return fmt.Errorf("resources[%d] %s: port %d is out of range", i, r.Name, r.Port)
		}
	}
	return nil
}

// Validate checks a login report: a session id as proxies make them, a
// unix login, a printable key id.
func (l Login) Validate() error {
	if l.SessionID == "" || len(l.SessionID) > 64 || !model.ValidName(l.SessionID) {
		return fmt.Errorf("login report: invalid session id %s", model.Quote(l.SessionID))
	}
	if len(l.Login) == 0 || len(l.Login) > 32 || strings.ContainsFunc(l.Login, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return fmt.Errorf("login report: invalid login %s", model.Quote(l.Login))
	}
	if len(l.KeyID) > 255 || strings.ContainsFunc(l.KeyID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("login report: invalid key id %s", model.Quote(l.KeyID))
	}
	if len(l.Refused) > maxDetail || strings.ContainsFunc(l.Refused, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("login report: invalid refusal %s", model.Quote(l.Refused))
	}
	return nil
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Every payload is a plain struct of strings, numbers and maps.
		panic(fmt.Sprintf("revtunnel: encode %T: %v", v, err))
	}
	return b
}

func decode(b []byte, v any) error {
	if len(b) > MaxPayload {
		return fmt.Errorf("payload of %d bytes exceeds %d", len(b), MaxPayload)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}
