package model

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Resource is one resource served by one agent, as last heartbeated and
// routed by the proxies.
type Resource struct {
	Name     string            `json:"name"`
	AgentID  string            `json:"agent_id"`
	Kind     string            `json:"kind"`           // KindSSH or KindTCP
	Port     int               `json:"port,omitempty"` // a tcp resource's upstream port
	Labels   map[string]string `json:"labels,omitempty"`
	Healthy  bool              `json:"healthy"`
	Detail   string            `json:"detail,omitempty"` // health detail
	ProxyID  string            `json:"proxy_id"`         // proxy holding the agent's tunnel
	LastSeen time.Time         `json:"last_seen"`
	Expires  time.Time         `json:"expires"` // LastSeen + heartbeat TTL
}

// Agent is one agent's route: which proxy holds its tunnel.
type Agent struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname,omitempty"`
	Version   string    `json:"version,omitempty"`
	ProxyID   string    `json:"proxy_id"`
	Addr      string    `json:"addr,omitempty"`     // remote address of the tunnel
	HostKey   string    `json:"host_key,omitempty"` // the agent's plain SSH host key, authorized_keys format
	Connected time.Time `json:"connected"`
	LastSeen  time.Time `json:"last_seen"`
}

// Definition is a dynamic resource: defined in the cluster configuration,
// served by every agent whose label watchers match it.
type Definition struct {
	Name   string            `json:"name" yaml:"name"`
	Kind   string            `json:"kind" yaml:"kind"`
	Addr   string            `json:"addr,omitempty" yaml:"addr"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels"`
	// Selector, if set, narrows the agents that may serve the resource by
	// the agents' own labels: "k=v[,k=v…]".
	Selector string `json:"selector,omitempty" yaml:"selector"`
}

// Validate reports every problem with d at once.
func (d Definition) Validate() error {
	var errs []error
	if !ValidName(d.Name) {
		errs = append(errs, fmt.Errorf("name: %s is not valid: %s", Quote(d.Name), NameRule))
	}
	switch d.Kind {
	case KindTCP:
		if _, _, err := net.SplitHostPort(d.Addr); err != nil {
			errs = append(errs, fmt.Errorf("addr: kind tcp needs host:port (as the agent reaches it), got %q", d.Addr))
		}
	case KindSSH:
		errs = append(errs, errors.New("kind: dynamic resources of kind ssh are not supported yet (an agent's host certificate names its ssh resources when its tunnel opens); use kind tcp, or a static ssh resource in the agent's config"))
	case "":
		errs = append(errs, errors.New("kind: required: tcp"))
	default:
		errs = append(errs, fmt.Errorf("kind: unknown kind %q: use tcp", d.Kind))
	}
	for k, v := range d.Labels {
		if err := CheckLabel(k, v); err != nil {
			errs = append(errs, fmt.Errorf("labels: %w", err))
		}
	}
	if _, err := ParseSelector(d.Selector); err != nil {
		errs = append(errs, fmt.Errorf("selector: %w", err))
	}
	return errors.Join(errs...)
}

// ParseSelector parses "k=v[,k=v…]" (empty matches everything).
func ParseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || strings.Contains(v, "=") {
			return nil, fmt.Errorf("malformed selector %q: want key=value pairs separated by commas", s)
		}
		if err := CheckLabel(k, v); err != nil {
			return nil, fmt.Errorf("malformed selector %q: %w", s, err)
		}
		out[k] = v
	}
	return out, nil
}

// Matches reports whether labels hold every pair of sel.
func Matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
