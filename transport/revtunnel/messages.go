package revtunnel

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// Request and channel type names.
const (
	ReqJoin      = "join@warren.dev"
	ReqHello     = "hello@warren.dev"
	ReqHeartbeat = "heartbeat@warren.dev"
	ReqKeepalive = "keepalive@openssh.com"
	ReqLogin     = "login@warren.dev"
	ReqProxies   = "proxies@warren.dev"
	ChanDial     = "dial@warren.dev"

	// JoinUser is the SSH user name of a join connection.
	JoinUser = "join"
	// MaxPayload bounds every request payload we decode.
	MaxPayload = 1 << 20
)

// Resource kinds.
const (
	KindSSH = "ssh"
	KindTCP = "tcp"
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
	Error  string `json:"error,omitempty"`
}

// Hello is the payload of ReqHello, sent once per tunnel.
type Hello struct {
	Version    string   `json:"version"`
	Hostname   string   `json:"hostname,omitempty"`
	Principals []string `json:"principals,omitempty"`
}

// HelloReply answers ReqHello.
type HelloReply struct {
	ProxyID  string `json:"proxy_id"`
	Region   string `json:"region,omitempty"`
	HostCert string `json:"host_cert,omitempty"` // renewed certificate
	// Proxies is the tunnel address of every proxy the agent may use.
	Proxies []ProxyInfo `json:"proxies,omitempty"`
	// Definitions are the cluster's dynamic resource definitions.
	Definitions []Definition `json:"definitions,omitempty"`
	Error       string       `json:"error,omitempty"`
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
}

// Heartbeat is the payload of ReqHeartbeat: the whole set of resources the
// agent serves right now. A resource missing from a heartbeat is withdrawn.
type Heartbeat struct {
	Seq       uint64           `json:"seq"`
	Resources []ResourceStatus `json:"resources"`
}

// ResourceStatus is one resource in a heartbeat.
type ResourceStatus struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"`
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
}

// DialRequest is the extra data of a ChanDial channel.
type DialRequest struct {
	SessionID  string `json:"session_id"`
	Resource   string `json:"resource"`
	Port       uint32 `json:"port,omitempty"`
	User       string `json:"user,omitempty"`
	ClientAddr string `json:"client_addr,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidName reports whether s is a valid agent id or resource name: 1–63
// letters, digits, '.', '_' or '-', starting with a letter or digit. Names
// are used as SSH host names, so nothing else is allowed.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks a heartbeat's contents.
func (h Heartbeat) Validate() error {
	seen := make(map[string]bool, len(h.Resources))
	for i, r := range h.Resources {
		if !ValidName(r.Name) {
			return fmt.Errorf("resources[%d]: invalid name %q", i, r.Name)
		}
		if r.Kind != KindSSH && r.Kind != KindTCP {
			return fmt.Errorf("resources[%d] %s: unknown kind %q (want ssh or tcp)", i, r.Name, r.Kind)
		}
		if seen[r.Name] {
			return fmt.Errorf("resources[%d]: duplicate name %q", i, r.Name)
		}
		seen[r.Name] = true
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
