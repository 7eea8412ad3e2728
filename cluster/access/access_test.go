package access

import (
	"strings"
	"testing"
	"time"
)

func mustRole(t *testing.T, yaml string) Role {
	t.Helper()
	r, err := ParseRole([]byte(yaml))
	if err != nil {
		t.Fatalf("ParseRole: %v\n%s", err, yaml)
	}
	return r
}

const devRole = `
name: dev
allow:
  logins: [ubuntu, "*"]
  resources: {env: [dev, "stag*"]}
  ports: ["5432", "8000-8099"]
  port_forwarding: true
deny:
  logins: [root]
`

func TestReach(t *testing.T) {
	dev := mustRole(t, devRole)
	ops := mustRole(t, `
name: ops
allow:
  logins: [root]
  resources: {"*": "*"}
deny:
  resources: {env: prod, team: [db]}
`)
	web := mustRole(t, `
name: web
allow:
  logins: [www]
  names: ["web-*"]
`)
	p := NewPolicy([]Role{dev, ops, web}, nil, nil, nil)
	node := func(name string, labels map[string]string) Target {
		return Target{Name: name, Kind: "ssh", Labels: labels}
	}
	tcp := func(name string, port int, labels map[string]string) Target {
		return Target{Name: name, Kind: "tcp", Port: port, Labels: labels}
	}
	cases := []struct {
		name    string
		roles   []string
		logins  []string
		target  Target
		allowed bool
		logins2 []string
		reason  string
	}{
		{"dev reaches dev node", []string{"dev"}, []string{"ubuntu", "root"}, node("n1", map[string]string{"env": "dev"}), true, []string{"ubuntu"}, ""},
		{"glob value", []string{"dev"}, []string{"ubuntu"}, node("n1", map[string]string{"env": "staging"}), true, []string{"ubuntu"}, ""},
		{"dev cannot reach prod", []string{"dev"}, []string{"ubuntu"}, node("db-prod", map[string]string{"env": "prod"}), false, nil, "access denied: role dev does not allow resource db-prod (env=prod)"},
		{"unlabelled is not dev", []string{"dev"}, []string{"ubuntu"}, node("n2", nil), false, nil, "role dev does not allow resource n2"},
		{"deny login root wins over *", []string{"dev"}, []string{"root"}, node("n1", map[string]string{"env": "dev"}), false, nil, "allows no login of your certificate (root)"},
		{"tcp port listed", []string{"dev"}, []string{"ubuntu"}, tcp("db", 5432, map[string]string{"env": "dev"}), true, nil, ""},
		{"tcp port in range", []string{"dev"}, []string{"ubuntu"}, tcp("web", 8080, map[string]string{"env": "dev"}), true, nil, ""},
		{"tcp port not listed", []string{"dev"}, []string{"ubuntu"}, tcp("redis", 6379, map[string]string{"env": "dev"}), false, nil, "does not allow resource redis"},
		{"ops everything", []string{"ops"}, []string{"root"}, node("x", nil), true, []string{"root"}, ""},
		{"ops deny prod", []string{"ops"}, []string{"root"}, node("x", map[string]string{"env": "prod", "team": "db"}), false, nil, "role ops denies resource x"},
		{"ops deny needs all keys", []string{"ops"}, []string{"root"}, node("x", map[string]string{"env": "prod", "team": "web"}), true, []string{"root"}, ""},
		{"deny of one role beats allow of another", []string{"dev", "ops"}, []string{"root", "ubuntu"}, node("x", map[string]string{"env": "dev"}), true, []string{"ubuntu"}, ""},
		{"names glob", []string{"web"}, []string{"www"}, node("web-1", nil), true, []string{"www"}, ""},
		{"names glob miss", []string{"web"}, []string{"www"}, node("db-1", nil), false, nil, "role web does not allow resource db-1"},
		{"unknown role", []string{"ghost"}, []string{"root"}, node("x", nil), false, nil, "roles (ghost) do not exist"},
		{"no roles", nil, []string{"root"}, node("x", nil), false, nil, "do not exist"},
		{"admin preset", []string{RoleAdmin}, []string{"root"}, node("x", map[string]string{"env": "prod"}), true, []string{"root"}, ""},
		{"access preset", []string{RoleAccess}, []string{"a", "b"}, node("x", nil), true, []string{"a", "b"}, ""},
		{"auditor reaches nothing", []string{RoleAuditor}, []string{"root"}, node("x", nil), false, nil, "role auditor does not allow resource x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := Identity{User: "alice", Roles: c.roles, Logins: c.logins}
			d := p.Reach(id, c.target)
			if d.Allowed != c.allowed {
				t.Fatalf("Reach: got allowed=%v (%s), want %v", d.Allowed, d.Reason, c.allowed)
			}
			if c.reason != "" && !strings.Contains(d.Reason, c.reason) {
				t.Errorf("reason: got %q, want it to contain %q", d.Reason, c.reason)
			}
			if c.logins2 != nil && strings.Join(d.Logins, ",") != strings.Join(c.logins2, ",") {
				t.Errorf("logins: got %v, want %v", d.Logins, c.logins2)
			}
			if got := p.See(id, c.target); c.target.Kind == "tcp" && got != c.allowed {
				t.Errorf("See: got %v, want %v", got, c.allowed)
			}
		})
	}
}

func TestLoginAndForwarding(t *testing.T) {
	p := NewPolicy([]Role{mustRole(t, devRole)}, nil, nil, nil)
	id := Identity{User: "alice", Roles: []string{"dev"}, Logins: []string{"ubuntu", "root"}}
	n := Target{Name: "n1", Kind: "ssh", Labels: map[string]string{"env": "dev"}}
	if d := p.Login(id, n, "ubuntu"); !d.Allowed {
		t.Errorf("Login ubuntu: %s", d.Reason)
	}
	if d := p.Login(id, n, "root"); d.Allowed || !strings.Contains(d.Reason, "login root on resource n1 is not allowed") {
		t.Errorf("Login root: got %+v", d)
	}
	if !p.Forwarding(id, n, "port") {
		t.Error("port forwarding: got false, want true")
	}
	if p.Forwarding(id, n, "agent") {
		t.Error("agent forwarding: got true, want false")
	}
	if p.Forwarding(id, Target{Name: "p", Kind: "ssh", Labels: map[string]string{"env": "prod"}}, "port") {
		t.Error("port forwarding on an unreachable resource: got true")
	}
}

func TestCan(t *testing.T) {
	p := NewPolicy([]Role{mustRole(t, `
name: noaudit
allow: {resources: {"*": "*"}}
deny: {audit: true}
`)}, nil, nil, nil)
	for _, c := range []struct {
		roles  []string
		action string
		want   bool
	}{
		{[]string{RoleAdmin}, "admin", true},
		{[]string{RoleAdmin}, "audit", true},
		{[]string{RoleAuditor}, "audit", true},
		{[]string{RoleAuditor}, "admin", false},
		{[]string{RoleAccess}, "audit", false},
		{[]string{RoleAdmin, "noaudit"}, "audit", false},
		{[]string{RoleAdmin, "noaudit"}, "admin", true},
	} {
		if got := p.Can(Identity{Roles: c.roles}, c.action).Allowed; got != c.want {
			t.Errorf("Can(%v, %s): got %v, want %v", c.roles, c.action, got, c.want)
		}
	}
}

func TestCheckIdentity(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	short := mustRole(t, "name: short\nallow: {resources: {'*': '*'}}\nmax_cert_ttl: 8h\n")
	p := NewPolicy([]Role{short}, []Lock{
		{Kind: LockUser, Name: "mallory", Message: "left the company"},
		{Kind: LockUser, Name: "bob", Expires: now.Add(-time.Minute)},
	}, nil, nil)
	for _, c := range []struct {
		id   Identity
		want string
	}{
		{Identity{User: "alice", Roles: []string{"short"}, CertTTL: 8 * time.Hour}, ""},
		{Identity{User: "alice", Roles: []string{"short"}, CertTTL: 9 * time.Hour}, "role short accepts at most 8h0m0s"},
		{Identity{User: "mallory", Roles: []string{RoleAdmin}}, "user mallory is locked by an administrator: left the company"},
		{Identity{User: "bob", Roles: []string{RoleAdmin}}, ""},
		{Identity{User: "carol", Roles: []string{"ghost"}}, "roles (ghost) do not exist"},
		{Identity{User: "carol"}, "holds no role"},
	} {
		got := p.CheckIdentity(c.id, now)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("CheckIdentity(%+v): got %q, want %q", c.id, got, c.want)
		}
	}
}

func TestParseRoleErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"name: admin\nallow: {admin: true}", "preset role"},
		{"name: x\nallow: {logins: ['-rf']}", "allow.logins[0]"},
		{"name: x\nallow: {resources: {'*': dev}}", `the key "*" takes only the value "*"`},
		{"name: x\nallow: {resources: {'bad key': dev}}", "label key"},
		{"name: x\nallow: {names: ['a/b']}", "allow.names[0]"},
		{"name: x\ndeny: {ports: ['70000']}", "deny.ports[0]"},
		{"name: x\nallow: {ports: ['90-80']}", "range"},
		{"name: x\nallow: {lgoins: [a]}", "lgoins"},
		{"name: 'a b'", "role name"},
		{"allow: {admin: true}", "name: required"},
		{"name: x\nallow: {resources: [a, b]}", "resources must be a map"},
	} {
		_, err := ParseRole([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseRole(%q): got %v, want an error with %q", c.yaml, err, c.want)
		}
	}
	if _, err := ParseRole(make([]byte, MaxRoleBytes+1)); err == nil {
		t.Error("ParseRole of an oversized role: got nil error")
	}
}

func TestPresetsCannotBeReplaced(t *testing.T) {
	evil := Role{Name: RoleAuditor, Allow: Rules{Admin: true}}
	p := NewPolicy([]Role{evil}, nil, nil, nil)
	if p.Can(Identity{Roles: []string{RoleAuditor}}, "admin").Allowed {
		t.Fatal("a stored role named auditor replaced the preset")
	}
}

func TestMayServe(t *testing.T) {
	p := NewPolicy(nil, nil, nil, []Claim{{Name: "node1", Agent: "a1"}})
	scoped := Grant{Token: "0123456789ab", Names: []string{"web-*", "db-1"}, Labels: map[string]string{"env": "prod"}}
	unscoped := Grant{Token: "ba9876543210"}
	for _, c := range []struct {
		agent  string
		g      Grant
		name   string
		labels map[string]string
		want   string
	}{
		{"a2", scoped, "web-7", nil, ""},
		{"a2", scoped, "db-1", map[string]string{"env": "prod"}, ""},
		{"a2", scoped, "node1", nil, "outside this agent's grant"},
		{"a2", scoped, "web-1", map[string]string{"env": "dev"}, "contradicts this agent's grant"},
		{"a1", unscoped, "node1", nil, ""},
		{"a2", unscoped, "node1", nil, "claimed by agent a1"},
		{"a2", unscoped, "fresh", nil, "no claim yet"},
	} {
		err := p.MayServe(c.agent, c.g, c.name, c.labels)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("MayServe(%s, %v, %s): got %v, want %q", c.agent, c.g.Names, c.name, err, c.want)
		}
	}
}

func TestTokens(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	secret := "00112233445566778899aabbccddeeff"
	tok := Token{ID: TokenID(secret), Hash: HashToken(secret), Expires: now.Add(time.Hour), Uses: 1}
	p := NewPolicy(nil, nil, []Token{tok}, nil)
	got, ok := p.FindToken(secret)
	if !ok || got.ID != tok.ID {
		t.Fatalf("FindToken: got %v %v", got, ok)
	}
	if _, ok := p.FindToken(secret[:31] + "0"); ok {
		t.Error("FindToken accepted a wrong secret")
	}
	if err := got.Redeemable(p, now); err != nil {
		t.Errorf("Redeemable: %v", err)
	}
	used := got
	used.Used = 1
	if err := used.Redeemable(p, now); err == nil || !strings.Contains(err.Error(), "used 1 of 1 times") {
		t.Errorf("Redeemable after its one use: got %v", err)
	}
	if err := got.Redeemable(p, now.Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Redeemable after expiry: got %v", err)
	}
	locked := NewPolicy(nil, []Lock{{Kind: LockToken, Name: tok.ID}}, []Token{tok}, nil)
	if err := got.Redeemable(locked, now); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("Redeemable when locked: got %v", err)
	}
	if _, ok := locked.AgentLocked("agent-1", Grant{Token: tok.ID}, now); !ok {
		t.Error("an agent that joined with a locked token is not locked")
	}
}

func TestTokenRequestBounds(t *testing.T) {
	r, err := TokenRequest{}.Validate()
	if err != nil || r.TTL != DefaultTokenTTL || r.RenewFor != DefaultRenewFor {
		t.Fatalf("defaults: got %+v, %v", r, err)
	}
	for _, bad := range []TokenRequest{
		{TTL: time.Millisecond}, {TTL: 365 * 24 * time.Hour}, {Uses: -1}, {RenewFor: time.Minute},
		{Resources: []string{"a b"}}, {Labels: map[string]string{"k": "a,b"}},
	} {
		if _, err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v): got nil error", bad)
		}
	}
}

func TestGrantRoundTrip(t *testing.T) {
	g := Grant{Token: "0123456789ab", Names: []string{"web-*"}, Labels: map[string]string{"env": "prod"}, RenewUntil: time.Unix(1900000000, 0).UTC()}
	back, err := DecodeGrant(g.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if back.Encode() != g.Encode() {
		t.Errorf("round trip: got %s, want %s", back.Encode(), g.Encode())
	}
	for _, bad := range []string{"", "{", `{"names":["a/b"]}`, `{"token":"zz"}`, strings.Repeat("x", MaxGrantBytes+1)} {
		if _, err := DecodeGrant(bad); err == nil {
			t.Errorf("DecodeGrant(%.20q): got nil error", bad)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		g, s string
		want bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*", "abc", true}, {"a*", "bac", false},
		{"*c", "abc", true}, {"a*c", "abbbc", true}, {"a*c", "abcd", false}, {"a*b*c", "aXbYc", true},
		{"a*b*c", "aXcYb", false}, {"stag*", "staging", true}, {"t1-*", "t1-", true}, {"abc", "abc", true},
		{"a**", "a", true}, {"*a*a", "banana", true}, {"*a*a", "bananb", false},
	} {
		if got := globMatch(c.g, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q): got %v, want %v", c.g, c.s, got, c.want)
		}
	}
}
