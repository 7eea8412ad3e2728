package access

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

// Identity is who asks: a user as their certificate says.
type Identity struct {
	User string
	// Roles are the role names in the certificate.
	Roles []string
	// Logins are the certificate's principals.
	Logins []string
	// CertTTL is how long the certificate was issued for.
	CertTTL time.Duration
}

// Target is what a user asks to reach.
type Target struct {
	Name   string
	Kind   string // "ssh" or "tcp"
	Labels map[string]string
	// Port is a tcp resource's port (0 when unknown or for ssh).
	Port int
}

// Decision is the outcome of an access check.
type Decision struct {
	Allowed bool
	// Reason is one sentence for the user when Allowed is false
	// ("access denied: role dev does not allow resource db-prod (env=prod)").
	Reason string
	// Logins are the logins the user may use on an ssh target.
	Logins []string
}

func deny(format string, args ...any) Decision {
	return Decision{Reason: "access denied: " + fmt.Sprintf(format, args...)}
}

// Policy is an immutable view of the cluster's access configuration:
// roles (presets and stored), locks, join tokens and name claims. A router
// builds one whenever the configuration changes; sessions read it without
// locks. Every decision is a pure function of the policy and its inputs.
type Policy struct {
	roles  map[string]*compiled
	locks  map[lockKey]Lock
	tokens map[string]Token
	claims map[string]Claim
}

type lockKey struct{ kind, name string }

// compiled is a role with its port lists parsed once.
type compiled struct {
	*Role
	allowPorts, denyPorts []portRange
}

type portRange struct{ lo, hi int }

func compile(r *Role) *compiled {
	parse := func(ps []string) []portRange {
		var out []portRange
		for _, p := range ps {
			if lo, hi, err := parsePorts(p); err == nil {
				out = append(out, portRange{lo, hi})
			}
		}
		return out
	}
	return &compiled{Role: r, allowPorts: parse(r.Allow.Ports), denyPorts: parse(r.Deny.Ports)}
}

func inRanges(rs []portRange, port int) bool {
	for _, r := range rs {
		if port >= r.lo && port <= r.hi {
			return true
		}
	}
	return false
}

// NewPolicy builds a policy. Stored roles that take a preset's name are
// ignored: presets cannot be replaced.
func NewPolicy(roles []Role, locks []Lock, tokens []Token, claims []Claim) *Policy {
	p := &Policy{
		roles:  make(map[string]*compiled, len(presets)+len(roles)),
		locks:  make(map[lockKey]Lock, len(locks)),
		tokens: make(map[string]Token, len(tokens)),
		claims: make(map[string]Claim, len(claims)),
	}
	for name, r := range presets {
		p.roles[name] = compile(&r)
	}
	for i := range roles {
		if !IsPreset(roles[i].Name) {
			r := roles[i]
			p.roles[r.Name] = compile(&r)
		}
	}
	for _, l := range locks {
		p.locks[lockKey{l.Kind, l.Name}] = l
	}
	for _, t := range tokens {
		p.tokens[t.ID] = t
	}
	for _, c := range claims {
		p.claims[c.Name] = c
	}
	return p
}

// Empty is the policy of a cluster without stored configuration: presets
// only.
var Empty = NewPolicy(nil, nil, nil, nil)

// Role returns a role by name (presets included).
func (p *Policy) Role(name string) (Role, bool) {
	r, ok := p.roles[name]
	if !ok {
		return Role{}, false
	}
	return *r.Role, true
}

// Roles returns every role, presets included, sorted by name.
func (p *Policy) Roles() []Role {
	out := make([]Role, 0, len(p.roles))
	for _, r := range p.roles {
		out = append(out, *r.Role)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// rolesOf returns the user's roles that exist, and the names that do not.
func (p *Policy) rolesOf(id Identity) (have []*compiled, missing []string) {
	have = make([]*compiled, 0, len(id.Roles))
	for _, name := range id.Roles {
		if r, ok := p.roles[name]; ok {
			have = append(have, r)
		} else {
			missing = append(missing, name)
		}
	}
	return have, missing
}

// CheckIdentity reports why a user may not use Warren at all right now: a
// lock, no role that exists, or a certificate longer-lived than a role
// accepts. The empty string means the user may go on.
func (p *Policy) CheckIdentity(id Identity, now time.Time) string {
	if l, ok := p.Locked(LockUser, id.User, now); ok {
		return l.Sentence()
	}
	roles, missing := p.rolesOf(id)
	if len(roles) == 0 {
		if len(missing) > 0 {
			return fmt.Sprintf("access denied: your certificate's roles (%s) do not exist in this cluster; ask an administrator", strings.Join(missing, ", "))
		}
		return "access denied: your certificate holds no role; ask an administrator for one (`warren user add --roles`)"
	}
	for _, r := range roles {
		if r.MaxCertTTL > 0 && id.CertTTL > r.MaxCertTTL {
			return fmt.Sprintf("access denied: your certificate was issued for %s but role %s accepts at most %s; get a shorter one (`warren user add --ttl %s`)",
				id.CertTTL, r.Name, r.MaxCertTTL, r.MaxCertTTL)
		}
	}
	return ""
}

// Can reports whether the user may do a cluster-wide action: "admin",
// "audit" or "recordings".
func (p *Policy) Can(id Identity, action string) Decision {
	roles, _ := p.rolesOf(id)
	flag := func(rs Rules) bool {
		switch action {
		case "admin":
			return rs.Admin
		case "audit":
			return rs.Audit
		case "recordings":
			return rs.Recordings
		}
		return false
	}
	allowed := false
	for _, r := range roles {
		if flag(r.Deny) {
			return deny("role %s denies %s", r.Name, action)
		}
		allowed = allowed || flag(r.Allow)
	}
	if !allowed {
		return deny("%s needs a role that allows it (%s); your roles: %s", action, presetFor(action), roleList(id.Roles))
	}
	return Decision{Allowed: true}
}

func presetFor(action string) string {
	switch action {
	case "audit":
		return "admin or auditor"
	case "recordings":
		return "admin, or a role with allow.recordings"
	}
	return "admin"
}

func roleList(rs []string) string {
	if len(rs) == 0 {
		return "none"
	}
	return strings.Join(rs, ", ")
}

// Reach decides whether the user may open a session to t: some role's
// allow side reaches t, no role's deny side denies it, and for an ssh
// resource at least one login of the certificate is allowed there (the
// node checks the login the user picks, with Login).
func (p *Policy) Reach(id Identity, t Target) Decision {
	roles, missing := p.rolesOf(id)
	if len(roles) == 0 {
		return deny("your certificate's roles (%s) do not exist in this cluster", roleList(missing))
	}
	if d, denied := p.denied(roles, t); denied {
		return d
	}
	var reaching []*compiled
	for _, r := range roles {
		if r.reaches(t) {
			reaching = append(reaching, r)
		}
	}
	if len(reaching) == 0 {
		return deny("%s not allow resource %s", rolePhrase(id.Roles, "does", "do"), describe(t))
	}
	if t.Kind != "ssh" {
		return Decision{Allowed: true}
	}
	logins := p.logins(roles, reaching, id.Logins)
	if len(logins) == 0 {
		return deny("%s no login of your certificate (%s) on resource %s", rolePhrase(id.Roles, "allows", "allow"), strings.Join(id.Logins, ", "), describe(t))
	}
	return Decision{Allowed: true, Logins: logins}
}

// See reports whether the user may see t in listings: the same labels,
// names and ports rules as Reach, without logins.
func (p *Policy) See(id Identity, t Target) bool { return p.Seer(id)(t) }

// Seer is See for many targets: the user's roles are looked up once.
func (p *Policy) Seer(id Identity) func(Target) bool {
	roles, _ := p.rolesOf(id)
	return func(t Target) bool { return sees(roles, t) }
}

func sees(roles []*compiled, t Target) bool {
	if r, _ := deniedBy(roles, t); r != nil {
		return false
	}
	for _, r := range roles {
		if r.reaches(t) {
			return true
		}
	}
	return false
}

// Login decides whether the user may log in to ssh resource t as login.
func (p *Policy) Login(id Identity, t Target, login string) Decision {
	d := p.Reach(id, t)
	if !d.Allowed {
		return d
	}
	if !slices.Contains(d.Logins, login) {
		return deny("login %s on resource %s is not allowed for you; allowed: %s", login, t.Name, strings.Join(d.Logins, ", "))
	}
	return Decision{Allowed: true, Logins: d.Logins}
}

// Forwarding reports whether the user may forward ports (kind "port") or
// their SSH agent (kind "agent") on ssh resource t: a role that reaches t
// allows it and no role denies it.
func (p *Policy) Forwarding(id Identity, t Target, kind string) bool {
	roles, _ := p.rolesOf(id)
	if r, _ := deniedBy(roles, t); r != nil {
		return false
	}
	opt := func(rs Rules) bool {
		if kind == "agent" {
			return rs.AgentForwarding
		}
		return rs.PortForwarding
	}
	allowed := false
	for _, r := range roles {
		if opt(r.Deny) {
			return false
		}
		allowed = allowed || opt(r.Allow) && r.reaches(t)
	}
	return allowed
}

// denied applies every role's deny side to t.
func (p *Policy) denied(roles []*compiled, t Target) (Decision, bool) {
	r, what := deniedBy(roles, t)
	switch {
	case r == nil:
		return Decision{}, false
	case what == "port":
		return deny("role %s denies port %d of resource %s", r.Name, t.Port, describe(t)), true
	}
	return deny("role %s denies resource %s", r.Name, describe(t)), true
}

// deniedBy returns the first role whose deny side refuses t, and whether it
// refuses the resource or its port.
func deniedBy(roles []*compiled, t Target) (*compiled, string) {
	for _, r := range roles {
		d := r.Deny
		switch {
		case d.Resources.Matches(t.Labels), model.MatchAny(d.Names, t.Name):
			return r, "resource"
		case t.Kind == "tcp" && t.Port > 0 && inRanges(r.denyPorts, t.Port):
			return r, "port"
		}
	}
	return nil, ""
}

// reaches reports whether the role's allow side reaches t.
func (r *compiled) reaches(t Target) bool {
	rs := r.Allow
	if len(rs.Resources) == 0 && len(rs.Names) == 0 {
		return false
	}
	if len(rs.Resources) > 0 && !rs.Resources.Matches(t.Labels) {
		return false
	}
	if len(rs.Names) > 0 && !model.MatchAny(rs.Names, t.Name) {
		return false
	}
	if t.Kind == "tcp" && len(r.allowPorts) > 0 && (t.Port == 0 || !inRanges(r.allowPorts, t.Port)) {
		return false
	}
	return true
}

// logins are the certificate's logins that a reaching role allows and no
// role denies, in the certificate's order.
func (p *Policy) logins(all, reaching []*compiled, certLogins []string) []string {
	var out []string
	for _, l := range certLogins {
		ok := false
		for _, r := range reaching {
			if slices.Contains(r.Allow.Logins, AnyLogin) || slices.Contains(r.Allow.Logins, l) {
				ok = true
				break
			}
		}
		for _, r := range all {
			if slices.Contains(r.Deny.Logins, AnyLogin) || slices.Contains(r.Deny.Logins, l) {
				ok = false
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func rolePhrase(roles []string, one, many string) string {
	switch len(roles) {
	case 0:
		return "no role " + one
	case 1:
		return "role " + roles[0] + " " + one
	}
	return "roles " + strings.Join(roles, ", ") + " " + many
}

// describe names a target with its labels for a refusal sentence.
func describe(t Target) string {
	if len(t.Labels) == 0 {
		return t.Name
	}
	keys := make([]string, 0, len(t.Labels))
	for k := range t.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + t.Labels[k]
	}
	return t.Name + " (" + strings.Join(parts, ",") + ")"
}
