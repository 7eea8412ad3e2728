package access

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/warren-proxy/warren/internal/conf"
	"github.com/warren-proxy/warren/internal/model"
)

// Preset role names. They exist in every cluster, cannot be changed or
// removed, and a stored role may not take their names.
const (
	RoleAdmin   = "admin"
	RoleAccess  = "access"
	RoleAuditor = "auditor"
)

// AnyLogin in a role's logins stands for every login the user's
// certificate holds.
const AnyLogin = "*"

// Limits on what a role may hold: roles are replicated to every proxy and
// agent and evaluated on every session.
const (
	MaxRoleBytes   = 64 << 10
	maxRoleEntries = 256
)

// Role allows and denies. Nothing is allowed by default; a deny in any of
// the user's roles wins over every allow.
type Role struct {
	Name  string `yaml:"name" json:"name"`
	Allow Rules  `yaml:"allow" json:"allow,omitempty"`
	Deny  Rules  `yaml:"deny" json:"deny,omitempty"`
	// MaxCertTTL, if set, is the longest user certificate the role
	// accepts: a user holding the role logs in only with a certificate
	// issued for at most this long. Across a user's roles the shortest
	// wins.
	MaxCertTTL time.Duration `yaml:"max_cert_ttl" json:"max_cert_ttl,omitempty"`
	// RecordInput records what users holding the role type in their PTY
	// sessions, besides what the terminal shows (every PTY session on an
	// agent's embedded SSH server is recorded). Off by default: what a
	// user types may hold passwords the terminal never echoed. Across a
	// user's roles, any role asking for it wins.
	RecordInput bool `yaml:"record_input" json:"record_input,omitempty"`
	// RequireRecording ends a PTY session of users holding the role when
	// the node cannot write its recording (spool full, disk error), and
	// refuses it when the recording cannot start; without it such a
	// session goes on unrecorded. Across a user's roles, any role
	// requiring it wins.
	RequireRecording bool `yaml:"require_recording" json:"require_recording,omitempty"`
	// Description is free text for `warren role ls`.
	Description string `yaml:"description" json:"description,omitempty"`
}

// Rules is one side (allow or deny) of a role.
//
// On the allow side a role reaches a resource when its resource conditions
// all hold: the label selector matches (if given) and the name matches one
// of the name globs (if given); a rule with neither reaches nothing. On the
// deny side every condition stands alone: a resource the deny selector
// matches, or a name a deny glob matches, is denied outright, and so is any
// login, port or option the deny side names, on every resource.
type Rules struct {
	// Logins are the unix logins the rule covers on ssh resources; "*"
	// means every login of the user's certificate.
	Logins []string `yaml:"logins" json:"logins,omitempty"`
	// Resources selects resources by label: keys AND-ed, the values listed
	// for a key OR-ed, '*' globs in values; {"*": "*"} is every resource.
	Resources Selector `yaml:"resources" json:"resources,omitempty"`
	// Names selects resources by name glob ("web-*").
	Names []string `yaml:"names" json:"names,omitempty"`
	// Ports are the ports of tcp resources ("5432", "8000-8099"); empty on
	// the allow side means every port.
	Ports []string `yaml:"ports" json:"ports,omitempty"`
	// PortForwarding and AgentForwarding are the OpenSSH options on the
	// embedded SSH server of ssh resources.
	PortForwarding  bool `yaml:"port_forwarding" json:"port_forwarding,omitempty"`
	AgentForwarding bool `yaml:"agent_forwarding" json:"agent_forwarding,omitempty"`
	// Admin is cluster administration: resources, tokens, roles, locks.
	Admin bool `yaml:"admin" json:"admin,omitempty"`
	// Audit is reading the audit log of every proxy.
	Audit bool `yaml:"audit" json:"audit,omitempty"`
	// Recordings is listing and playing session recordings (`warren
	// recordings`, `warren play`): they hold what users' terminals showed.
	Recordings bool `yaml:"recordings" json:"recordings,omitempty"`
}

// Selector matches resources by label: every key must be present with a
// value matching one of its globs. The key "*" with the value "*" matches
// every resource, labelled or not.
type Selector map[string][]string

// UnmarshalYAML accepts a value or a list of values per key.
func (s *Selector) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: resources must be a map of label keys to a value or a list of values", n.Line)
	}
	out := Selector{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch v.Kind {
		case yaml.ScalarNode:
			out[k.Value] = []string{v.Value}
		case yaml.SequenceNode:
			var vs []string
			if err := v.Decode(&vs); err != nil {
				return fmt.Errorf("line %d: resources.%s: %w", v.Line, k.Value, err)
			}
			out[k.Value] = vs
		default:
			return fmt.Errorf("line %d: resources.%s must be a value or a list of values", v.Line, k.Value)
		}
	}
	*s = out
	return nil
}

func (s Selector) everything() bool {
	vs, ok := s["*"]
	return ok && len(vs) == 1 && vs[0] == "*"
}

// Matches reports whether labels satisfy s. An empty selector matches
// nothing.
func (s Selector) Matches(labels map[string]string) bool {
	if len(s) == 0 {
		return false
	}
	if s.everything() {
		return true
	}
	for k, vs := range s {
		v, ok := labels[k]
		if !ok || !matchValue(vs, v) {
			return false
		}
	}
	return true
}

func matchValue(globs []string, v string) bool {
	for _, g := range globs {
		if g == "*" || g == v || strings.Contains(g, "*") && globMatch(g, v) {
			return true
		}
	}
	return false
}

// globMatch matches '*' (any run of bytes) against s; nothing else is
// special, so label values need no escaping. It backtracks only to the
// last star, which is enough for '*' alone.
func globMatch(g, s string) bool {
	gi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case gi < len(g) && g[gi] == '*':
			star, mark = gi, si
			gi++
		case gi < len(g) && g[gi] == s[si]:
			gi++
			si++
		case star >= 0:
			gi, mark = star+1, mark+1
			si = mark
		default:
			return false
		}
	}
	for gi < len(g) && g[gi] == '*' {
		gi++
	}
	return gi == len(g)
}

// String renders s as "k=v1|v2,k2=v" sorted by key, for messages.
func (s Selector) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strings.Join(s[k], "|")
	}
	return strings.Join(parts, ",")
}

// ParseRole decodes a role from YAML (unknown fields refused) and checks it.
func ParseRole(data []byte) (Role, error) {
	if len(data) > MaxRoleBytes {
		return Role{}, fmt.Errorf("role definition is %d bytes; at most %d are allowed", len(data), MaxRoleBytes)
	}
	var r Role
	if err := conf.Decode(data, &r); err != nil {
		return Role{}, err
	}
	if err := r.Validate(); err != nil {
		return Role{}, err
	}
	return r, nil
}

// Validate reports every problem with r at once, each with its field.
func (r Role) Validate() error {
	var errs conf.Errors
	switch {
	case r.Name == "":
		errs.Addf("name", "required")
	case !model.ValidName(r.Name):
		errs.Addf("name", "%s", model.CheckName("role name", r.Name))
	case IsPreset(r.Name):
		errs.Addf("name", "%q is a preset role and cannot be changed; choose another name", r.Name)
	}
	r.Allow.validate("allow", &errs)
	r.Deny.validate("deny", &errs)
	if r.MaxCertTTL < 0 {
		errs.Addf("max_cert_ttl", "must not be negative")
	}
	if len(r.Description) > 1024 {
		errs.Addf("description", "at most 1024 bytes")
	}
	return errs.Err()
}

func (rs Rules) validate(side string, errs *conf.Errors) {
	if n := len(rs.Logins) + len(rs.Resources) + len(rs.Names) + len(rs.Ports); n > maxRoleEntries {
		errs.Addf(side, "%d entries; at most %d", n, maxRoleEntries)
		return
	}
	for i, l := range rs.Logins {
		if l != AnyLogin && !validLogin(l) {
			errs.Addf(fmt.Sprintf("%s.logins[%d]", side, i), "%s is not a unix login (or %q for every login of the certificate)", model.Quote(l), AnyLogin)
		}
	}
	for k, vs := range rs.Resources {
		field := side + ".resources." + k
		if k == "*" {
			if len(vs) != 1 || vs[0] != "*" {
				errs.Addf(field, `the key "*" takes only the value "*" (every resource)`)
			}
			continue
		}
		if err := model.CheckLabel(k, ""); err != nil {
			errs.Addf(field, "%v", err)
		}
		if len(vs) == 0 {
			errs.Addf(field, "give at least one value (or \"*\" for any)")
		}
		for _, v := range vs {
			if err := model.CheckLabel(k, v); err != nil {
				errs.Addf(field, "%v", err)
			}
		}
	}
	for i, g := range rs.Names {
		if !model.ValidGlob(g) {
			errs.Addf(fmt.Sprintf("%s.names[%d]", side, i), "%s is not a name glob: name characters and '*' or '?'", model.Quote(g))
		}
	}
	for i, p := range rs.Ports {
		if _, _, err := parsePorts(p); err != nil {
			errs.Addf(fmt.Sprintf("%s.ports[%d]", side, i), "%v", err)
		}
	}
}

// validLogin accepts the portable POSIX user names plus a trailing '$', as
// useradd does (the same rule as certificates' logins).
func validLogin(l string) bool {
	if l == "" || len(l) > 32 {
		return false
	}
	body := strings.TrimSuffix(l, "$")
	for i := 0; i < len(body); i++ {
		c := body[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' ||
			i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-')
		if !ok {
			return false
		}
	}
	return body != ""
}

// parsePorts reads "22" or "8000-8099".
func parsePorts(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(strings.TrimSpace(a)); err != nil || lo < 1 || lo > 65535 {
		return 0, 0, fmt.Errorf("%s is not a port or a range of ports like 8000-8099", model.Quote(s))
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil || hi < lo || hi > 65535 {
			return 0, 0, fmt.Errorf("%s is not a range of ports like 8000-8099", model.Quote(s))
		}
	}
	return lo, hi, nil
}

// presets are the roles every cluster has.
var presets = map[string]Role{
	RoleAdmin: {
		Name:        RoleAdmin,
		Description: "everything: every resource with the certificate's logins, forwarding, cluster administration, the audit log and session recordings",
		Allow: Rules{
			Logins: []string{AnyLogin}, Resources: Selector{"*": {"*"}},
			PortForwarding: true, AgentForwarding: true, Admin: true, Audit: true, Recordings: true,
		},
	},
	RoleAccess: {
		Name:        RoleAccess,
		Description: "every resource with the certificate's logins, and forwarding",
		Allow: Rules{
			Logins: []string{AnyLogin}, Resources: Selector{"*": {"*"}},
			PortForwarding: true, AgentForwarding: true,
		},
	},
	RoleAuditor: {
		Name:        RoleAuditor,
		Description: "reads the audit log of every proxy; reaches no resource",
		Allow:       Rules{Audit: true},
	},
}

// IsPreset reports whether name is a preset role.
func IsPreset(name string) bool { _, ok := presets[name]; return ok }
