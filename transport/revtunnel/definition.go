package revtunnel

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/warren-proxy/warren/internal/names"
)

// ReqDefinitions is sent by a proxy to its agents (Definitions, no reply)
// whenever the cluster's dynamic resource definitions change.
const ReqDefinitions = "definitions@warren.dev"

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

// Definitions is the payload of ReqDefinitions: the whole current set.
type Definitions struct {
	Definitions []Definition `json:"definitions"`
}

// Validate reports every problem with d at once.
func (d Definition) Validate() error {
	var errs []error
	if !ValidName(d.Name) {
		errs = append(errs, fmt.Errorf("name: %q is not valid: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", d.Name))
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
		if err := checkLabel(k, v); err != nil {
			errs = append(errs, fmt.Errorf("labels: %w", err))
		}
	}
	if _, err := ParseSelector(d.Selector); err != nil {
		errs = append(errs, fmt.Errorf("selector: %w", err))
	}
	return errors.Join(errs...)
}

func checkLabel(k, v string) error { return names.CheckLabel(k, v) }

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
		if err := checkLabel(k, v); err != nil {
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
