package usercmd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/usersh"
)

// fakeProxy is a proxy with two resources: web (env=prod) and db
// (env=dev), and one role, dev, that sees env=dev.
type fakeProxy struct {
	snap    *router.Snapshot
	puts    []string
	drained int
}

func newFakeProxy() *fakeProxy {
	ep := func(name, env string) router.Endpoint {
		return router.Endpoint{Resource: model.Resource{Name: name, Kind: model.KindTCP, AgentID: "a-" + name, Healthy: true, Labels: map[string]string{"env": env}}, Online: true}
	}
	dev := access.Role{Name: "dev", Allow: access.Rules{Resources: access.Selector{"env": {"dev"}}}}
	return &fakeProxy{snap: &router.Snapshot{
		Resources: map[string][]router.Endpoint{"web": {ep("web", "prod")}, "db": {ep("db", "dev")}},
		Policy:    access.NewPolicy([]access.Role{dev}, nil, nil, nil),
	}}
}

func (f *fakeProxy) Snapshot() *router.Snapshot { return f.snap }
func (f *fakeProxy) Now() time.Time             { return time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC) }
func (f *fakeProxy) Status() model.Statuses {
	return model.Statuses{{ID: "p1", State: "alive", LocalAgents: 2, Routes: 2, Link: "self"}}
}
func (f *fakeProxy) Put(key string, v any) error { f.puts = append(f.puts, key); return nil }
func (f *fakeProxy) PutConfig(m *router.PutConfig) error {
	f.puts = append(f.puts, m.Key)
	return nil
}
func (f *fakeProxy) PutDefinition(m *router.PutDefinition) error {
	f.puts = append(f.puts, "resource/"+m.Definition.Name)
	return nil
}
func (f *fakeProxy) CreateToken(access.TokenRequest, string) (string, access.Token, error) {
	return "secret", access.Token{ID: "0123456789ab"}, nil
}
func (f *fakeProxy) LocalAudit(*clusterpb.AuditQuery) *clusterpb.AuditResult {
	return &clusterpb.AuditResult{}
}
func (f *fakeProxy) ClusterAudit(*clusterpb.AuditQuery) ([]audit.Event, bool, []string) {
	return []audit.Event{{Type: "session.start", User: "bob", Resource: "db"}}, false, nil
}
func (f *fakeProxy) Help() string { return "help text\n" }

func (f *fakeProxy) Drain(string) int { f.drained++; return 2 }

func run(f Proxy, user usersh.Identity, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Commands{P: f}.Run(user, args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

var (
	admin = usersh.Identity{User: "alice", Roles: []string{access.RoleAdmin}, Logins: []string{"alice"}}
	bob   = usersh.Identity{User: "bob", Roles: []string{"dev"}, Logins: []string{"bob"}}
)

func TestLsShowsOnlyWhatTheUserMayReach(t *testing.T) {
	f := newFakeProxy()
	_, out, _ := run(f, bob, "", "ls")
	if !strings.Contains(out, "db") || strings.Contains(out, "web") {
		t.Errorf("bob's ls:\n%s\nwant db and not web", out)
	}
	_, out, _ = run(f, admin, "", "ls")
	if !strings.Contains(out, "db") || !strings.Contains(out, "web") {
		t.Errorf("admin's ls:\n%s\nwant both", out)
	}
}

func TestAdminCommandsNeedTheAdminRole(t *testing.T) {
	f := newFakeProxy()
	for _, args := range [][]string{{"token", "add"}, {"role", "ls"}, {"lock", "user", "carol"}, {"resource", "rm", "db"}, {"audit"}, {"drain"}} {
		code, _, errOut := run(f, bob, "", args...)
		if code != 1 || !strings.Contains(errOut, "warren: ") {
			t.Errorf("bob %v: exit %d, stderr %q; want refused with a reason", args, code, errOut)
		}
	}
	if len(f.puts) != 0 || f.drained != 0 {
		t.Errorf("refused commands wrote %v, drained %d times", f.puts, f.drained)
	}
	if code, out, _ := run(f, admin, "", "drain"); code != 0 || f.drained != 1 || !strings.Contains(out, "draining") {
		t.Errorf("admin drain: exit %d, drained %d times, out %q", code, f.drained, out)
	}
	code, out, errOut := run(f, admin, "left the company", "lock", "user", "carol")
	if code != 0 || len(f.puts) != 1 || f.puts[0] != "lock/user/carol" || !strings.Contains(out, "user carol locked") {
		t.Errorf("admin lock: exit %d, puts %v, out %q, err %q", code, f.puts, out, errOut)
	}
}

func TestStatusHidesCountsFromNonAdmins(t *testing.T) {
	f := newFakeProxy()
	_, out, _ := run(f, bob, "", "status")
	if !strings.Contains(out, "p1") || strings.Contains(out, " 2 ") {
		t.Errorf("bob's status shows agent or route counts:\n%s", out)
	}
	_, out, _ = run(f, admin, "", "status")
	if !strings.Contains(out, "2") {
		t.Errorf("admin's status lacks the counts:\n%s", out)
	}
}

func TestUnknownCommandsAndBadNamesAreUsageErrors(t *testing.T) {
	f := newFakeProxy()
	code, _, errOut := run(f, admin, "", "rm", "-rf")
	if code != 2 || !strings.Contains(errOut, "unknown proxy command") || !strings.Contains(errOut, "commands are") {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
	code, _, errOut = run(f, admin, "", "audit", "--resource", strings.Repeat("x", 300))
	if code != 2 || len(errOut) > 400 {
		t.Errorf("a 300-byte resource name: exit %d, %d bytes of error: want a short usage error", code, len(errOut))
	}
	code, out, _ := run(f, admin, "")
	if code != 0 || out != "help text\n" {
		t.Errorf("no command: exit %d, %q; want help", code, out)
	}
}
