package pki

import (
	"crypto/rand"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func newKey(t *testing.T) ssh.Signer {
	t.Helper()
	s, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUserCertRequestValidate(t *testing.T) {
	good := UserCertRequest{User: "alice@example.com", Logins: []string{"alice", "root", "svc_1", "m$"}, Roles: []string{"dev", "ops:eu"}, TTL: time.Hour}
	tests := []struct {
		name   string
		modify func(r *UserCertRequest)
		want   []string // substrings, one per problem; none means valid
	}{
		{"good", func(*UserCertRequest) {}, nil},
		{"max TTL", func(r *UserCertRequest) { r.TTL = MaxUserCertTTL }, nil},
		{"empty user", func(r *UserCertRequest) { r.User = "" }, []string{"user name is empty"}},
		{"user with space", func(r *UserCertRequest) { r.User = "al ice" }, []string{`user name "al ice" is not valid`}},
		{"no logins", func(r *UserCertRequest) { r.Logins = nil }, []string{"no logins"}},
		{"bad logins", func(r *UserCertRequest) { r.Logins = []string{"-rf", "a b", "", "Über"} }, []string{
			`login "-rf"`, `login "a b"`, `login ""`, `login "Über"`}},
		{"bad role", func(r *UserCertRequest) { r.Roles = []string{"a,b"} }, []string{`role "a,b" is not valid`}},
		{"zero TTL", func(r *UserCertRequest) { r.TTL = 0 }, []string{"TTL 0s is not positive"}},
		{"TTL too long", func(r *UserCertRequest) { r.TTL = MaxUserCertTTL + time.Second }, []string{"longer than the maximum"}},
		{"everything wrong", func(r *UserCertRequest) { *r = UserCertRequest{User: "?", TTL: -time.Second} }, []string{
			`user name "?"`, "no logins", "TTL -1s is not positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			r.Logins = slices.Clone(good.Logins)
			tt.modify(&r)
			checkProblems(t, r.Validate(), tt.want)
		})
	}
}

// checkProblems checks that err reports exactly the wanted problems, one per
// line (errors.Join).
func checkProblems(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Errorf("got error %q, want none", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want %q", want)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("got %d problems %q, want %d", len(lines), lines, len(want))
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got error %q, want it to contain %q", err, w)
		}
	}
}

func TestIssueUserCert(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	cert, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{
		User:   "alice",
		Logins: []string{"alice", "root", "alice"},
		Roles:  []string{"dev", "ops", "dev"},
		TTL:    8 * time.Hour,
		Now:    t0,
	})
	if err != nil {
		t.Fatalf("IssueUserCert: %v", err)
	}
	if cert.CertType != ssh.UserCert {
		t.Errorf("CertType: got %d, want %d", cert.CertType, ssh.UserCert)
	}
	if cert.KeyId != "alice" {
		t.Errorf("KeyId: got %q, want %q", cert.KeyId, "alice")
	}
	if want := []string{"alice", "root"}; !slices.Equal(cert.ValidPrincipals, want) {
		t.Errorf("ValidPrincipals: got %q, want %q", cert.ValidPrincipals, want)
	}
	if got, want := cert.ValidAfter, uint64(t0.Add(-time.Minute).Unix()); got != want {
		t.Errorf("ValidAfter: got %d, want %d", got, want)
	}
	if got, want := cert.ValidBefore, uint64(t0.Add(8*time.Hour).Unix()); got != want {
		t.Errorf("ValidBefore: got %d, want %d", got, want)
	}
	wantExt := map[string]string{
		"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "",
		"permit-X11-forwarding": "", "permit-user-rc": "",
		ExtUser: "alice", ExtRoles: "dev,ops",
	}
	if len(cert.Extensions) != len(wantExt) {
		t.Errorf("Extensions: got %q, want %q", cert.Extensions, wantExt)
	}
	for k, v := range wantExt {
		if got, ok := cert.Extensions[k]; !ok || got != v {
			t.Errorf("extension %s: got %q (present %v), want %q", k, got, ok, v)
		}
	}
	if len(cert.CriticalOptions) != 0 {
		t.Errorf("CriticalOptions: got %q, want none", cert.CriticalOptions)
	}
	if !sameKey(cert.SignatureKey, a.UserCA.PublicKey()) {
		t.Error("SignatureKey: got another key than the user CA")
	}
	if !sameKey(cert.Key, key.PublicKey()) {
		t.Error("Key: got another key than the one certified")
	}
	user, roles := UserFromCert(cert)
	if user != "alice" || !slices.Equal(roles, []string{"dev", "ops"}) {
		t.Errorf("UserFromCert: got %q %q, want alice [dev ops]", user, roles)
	}

	// The certificate survives the wire format.
	parsed, err := ssh.ParsePublicKey(cert.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckUserCert(parsed, CertOptions{Authorities: []ssh.PublicKey{a.UserCA.PublicKey()}, Now: t0}); err != nil {
		t.Errorf("CheckUserCert of the parsed certificate: %v", err)
	}

	// Serials differ between certificates.
	other, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if other.Serial == cert.Serial {
		t.Errorf("got equal serials %d for two certificates, want random ones", cert.Serial)
	}

	// Valid for its logins and no other, as an SSH server checks it.
	checker := &ssh.CertChecker{
		IsUserAuthority: func(k ssh.PublicKey) bool { return sameKey(k, a.UserCA.PublicKey()) },
		Clock:           func() time.Time { return t0 },
	}
	for _, tt := range []struct {
		login string
		ok    bool
	}{{"alice", true}, {"root", true}, {"bob", false}, {"", false}} {
		err := checker.CheckCert(tt.login, cert)
		if got := err == nil; got != tt.ok {
			t.Errorf("CertChecker.CheckCert(%q): got error %v, want ok %v", tt.login, err, tt.ok)
		}
	}
}

func TestIssueUserCertRefuses(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	cert, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  ssh.PublicKey
		req  UserCertRequest
		want []string
	}{
		{"nil key", nil, UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour},
			[]string{"no public key"}},
		{"certificate as key", cert, UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour},
			[]string{"already a certificate"}},
		{"all problems at once", nil, UserCertRequest{},
			[]string{"no public key", "user name is empty", "no logins", "TTL 0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.IssueUserCert(tt.pub, tt.req)
			checkProblems(t, err, tt.want)
			if err != nil && !strings.HasPrefix(err.Error(), "issue user certificate: ") {
				t.Errorf("got error %q, want it to start with %q", err, "issue user certificate: ")
			}
		})
	}
}

// signCert signs a hand-made certificate, for shapes Warren never issues.
func signCert(t *testing.T, ca ssh.Signer, c *ssh.Certificate) *ssh.Certificate {
	t.Helper()
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckUserCert(t *testing.T) {
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	key := newKey(t)
	issue := func(a *Authority) *ssh.Certificate {
		c, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := issue(a)
	host, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "node1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	// A host certificate signed by the user CA, to reach the type check.
	hostByUserCA := signCert(t, a.UserCA, &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"x"}, ValidBefore: ssh.CertTimeInfinity})
	tampered := *issue(a)
	tampered.ValidPrincipals = []string{"root"}
	forced := signCert(t, a.UserCA, &ssh.Certificate{
		Key: key.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity,
		Permissions: ssh.Permissions{CriticalOptions: map[string]string{"force-command": "true", "source-address": "10.0.0.0/8"}},
	})
	anyLogin := signCert(t, a.UserCA, &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity})
	forever := signCert(t, a.UserCA, &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity})

	cas := []ssh.PublicKey{foreign.UserCA.PublicKey(), a.UserCA.PublicKey()}
	tests := []struct {
		name    string
		pub     ssh.PublicKey
		cas     []ssh.PublicKey
		now     time.Time
		wantErr string
	}{
		{"valid", good, cas, t0, ""},
		{"valid within clock skew", good, cas, t0.Add(-ClockSkew), ""},
		{"valid until the last second", good, cas, t0.Add(time.Hour - time.Second), ""},
		{"never expires", forever, cas, t0.AddDate(100, 0, 0), ""},
		{"expired", good, cas, t0.Add(time.Hour), "certificate expired at 2026-05-06T08:08:09Z"},
		{"not yet valid", good, cas, t0.Add(-ClockSkew - time.Second), "certificate is not valid before 2026-05-06T07:07:09Z"},
		{"foreign CA", issue(foreign), []ssh.PublicKey{a.UserCA.PublicKey()}, t0, "certificate is not signed by the cluster user CA"},
		{"no CAs", good, nil, t0, "certificate is not signed by the cluster user CA"},
		{"not a certificate", key.PublicKey(), cas, t0, "key is not a certificate: log in with a certificate from `warren user add`"},
		{"host certificate", host, cas, t0, "certificate is a host certificate, not a user certificate"},
		{"host certificate by the user CA", hostByUserCA, cas, t0, "certificate is a host certificate, not a user certificate"},
		{"tampered", &tampered, cas, t0, "certificate signature is invalid"},
		{"critical options", forced, cas, t0, "certificate has critical options force-command, which Warren does not enforce"},
		{"no principals", anyLogin, cas, t0, "certificate names no logins (principals)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := CheckUserCert(tt.pub, CertOptions{Authorities: tt.cas, Now: tt.now})
			if tt.wantErr == "" {
				if err != nil || cert == nil {
					t.Fatalf("got %v, want a valid certificate", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("got error %v, want %q", err, tt.wantErr)
			}
			if cert != nil {
				t.Error("got a certificate along with the error, want nil")
			}
		})
	}
}

func TestHostCertRequestValidate(t *testing.T) {
	tests := []struct {
		name string
		req  HostCertRequest
		want []string
	}{
		{"good", HostCertRequest{ID: "node-1.eu", Principals: []string{"10.0.0.1", "node1.example.com", "*.corp"}, TTL: time.Hour}, nil},
		{"empty id", HostCertRequest{TTL: time.Hour}, []string{"host id is empty"}},
		{"id with slash", HostCertRequest{ID: "agent/1", TTL: time.Hour}, []string{`host id "agent/1" is not valid`}},
		{"bad principals", HostCertRequest{ID: "n", Principals: []string{"", "a b", "a,b"}, TTL: time.Hour},
			[]string{`principal ""`, `principal "a b"`, `principal "a,b"`}},
		{"all problems at once", HostCertRequest{Principals: []string{"\n"}, TTL: MaxHostCertTTL + 1},
			[]string{"host id is empty", `principal "\n"`, "longer than the maximum"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, tt.req.Validate(), tt.want)
		})
	}
}

func TestIssueHostCert(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	cert, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{
		ID: "node1", Principals: []string{"node1.example.com", "node1", "10.0.0.7"}, TTL: 24 * time.Hour, Now: t0,
	})
	if err != nil {
		t.Fatalf("IssueHostCert: %v", err)
	}
	if cert.CertType != ssh.HostCert || cert.KeyId != "node1" {
		t.Errorf("got type %d id %q, want type %d id %q", cert.CertType, cert.KeyId, ssh.HostCert, "node1")
	}
	if want := []string{"node1", "node1.example.com", "10.0.0.7"}; !slices.Equal(cert.ValidPrincipals, want) {
		t.Errorf("ValidPrincipals: got %q, want %q", cert.ValidPrincipals, want)
	}
	if len(cert.Extensions) != 0 || len(cert.CriticalOptions) != 0 {
		t.Errorf("got extensions %q and critical options %q, want none", cert.Extensions, cert.CriticalOptions)
	}
	if _, err := a.IssueHostCert(nil, HostCertRequest{}); err == nil {
		t.Error("IssueHostCert with nothing: got no error, want one")
	}
}

func TestCheckHostCert(t *testing.T) {
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	key := newKey(t)
	issue := func(a *Authority) *ssh.Certificate {
		c, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "node1", Principals: []string{"10.0.0.7"}, TTL: time.Hour, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := issue(a)
	user, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{User: "alice", Logins: []string{"alice"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	tampered := *issue(a)
	tampered.KeyId = "node2"
	hostCA := a.HostCA.PublicKey()
	tests := []struct {
		name      string
		ca        ssh.PublicKey
		pub       ssh.PublicKey
		principal string
		now       time.Time
		wantErr   string
	}{
		{"valid for id", hostCA, good, "node1", t0, ""},
		{"valid for extra principal", hostCA, good, "10.0.0.7", t0, ""},
		{"no principal asked", hostCA, good, "", t0, ""},
		{"wrong principal", hostCA, good, "node2", t0, `certificate is valid for "node1", "10.0.0.7", not for "node2"`},
		{"expired", hostCA, good, "node1", t0.Add(2 * time.Hour), "certificate expired at 2026-05-06T08:08:09Z"},
		{"foreign CA", hostCA, issue(foreign), "node1", t0, "certificate is not signed by the cluster host CA"},
		{"user CA is not the host CA", a.UserCA.PublicKey(), good, "node1", t0, "certificate is not signed by the cluster host CA"},
		{"user certificate", hostCA, user, "", t0, "certificate is a user certificate, not a host certificate"},
		{"not a certificate", hostCA, key.PublicKey(), "node1", t0, "host key is not a certificate: the host has not joined the cluster"},
		{"tampered", hostCA, &tampered, "node1", t0, "certificate signature is invalid"},
		{"nil CA", nil, good, "node1", t0, "certificate is not signed by the cluster host CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := CheckHostCert(tt.pub, CertOptions{Authorities: []ssh.PublicKey{tt.ca}, Now: tt.now, Principal: tt.principal})
			if tt.wantErr == "" {
				if err != nil || cert == nil {
					t.Fatalf("got %v, want a valid certificate", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("got error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestUserFromCert(t *testing.T) {
	tests := []struct {
		name      string
		cert      *ssh.Certificate
		wantUser  string
		wantRoles []string
	}{
		{"nil", nil, "", nil},
		{"extensions", &ssh.Certificate{KeyId: "id", Permissions: ssh.Permissions{Extensions: map[string]string{ExtUser: "alice", ExtRoles: "a,b"}}}, "alice", []string{"a", "b"}},
		{"KeyId fallback", &ssh.Certificate{KeyId: "bob"}, "bob", nil},
		{"empty roles", &ssh.Certificate{Permissions: ssh.Permissions{Extensions: map[string]string{ExtUser: "c", ExtRoles: ""}}}, "c", nil},
		{"stray commas", &ssh.Certificate{Permissions: ssh.Permissions{Extensions: map[string]string{ExtUser: "d", ExtRoles: ",a,,b,"}}}, "d", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, roles := UserFromCert(tt.cert)
			if user != tt.wantUser || !slices.Equal(roles, tt.wantRoles) {
				t.Errorf("got %q %q, want %q %q", user, roles, tt.wantUser, tt.wantRoles)
			}
		})
	}
}

// FuzzCheckUserCert feeds arbitrary wire-format keys, as a client sends them,
// to the checks: they must never panic nor accept anything.
func FuzzCheckUserCert(f *testing.F) {
	dir := f.TempDir()
	a, err := Init(dir, InitOptions{})
	if err != nil {
		f.Fatal(err)
	}
	s, _, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	c, err := a.IssueUserCert(s.PublicKey(), UserCertRequest{User: "u", Logins: []string{"u"}, TTL: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.Marshal())
	f.Add(s.PublicKey().Marshal())
	cas := []ssh.PublicKey{a.UserCA.PublicKey()}
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := ssh.ParsePublicKey(b)
		if err != nil {
			return
		}
		if cert, err := CheckUserCert(pub, CertOptions{Authorities: cas}); err == nil && string(cert.Marshal()) != string(c.Marshal()) {
			t.Errorf("accepted a certificate the CA did not issue: %x", b)
		}
		_, _ = CheckHostCert(pub, CertOptions{Authorities: []ssh.PublicKey{a.HostCA.PublicKey()}, Principal: "x"})
		UserFromCert(func() *ssh.Certificate { c, _ := pub.(*ssh.Certificate); return c }())
	})
}

func TestUnixSeconds(t *testing.T) {
	tests := []struct {
		in   time.Time
		want uint64
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(-5, 0), 0},
		{time.Unix(1700000000, 0), 1700000000},
	}
	for _, tt := range tests {
		if got := unixSeconds(tt.in); got != tt.want {
			t.Errorf("unixSeconds(%v): got %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestAgentCertRequestValidate(t *testing.T) {
	good := AgentCertRequest{ID: "agent-1", Names: []string{"web", "db.eu-1"}, Grant: `{"names":["web*"]}`, TTL: time.Hour, NotAfter: t0.Add(time.Minute), Now: t0}
	tests := []struct {
		name   string
		modify func(r *AgentCertRequest)
		want   []string // substrings, one per problem; none means valid
	}{
		{"good", func(*AgentCertRequest) {}, nil},
		{"no names, no grant, no NotAfter", func(r *AgentCertRequest) { r.Names, r.Grant, r.NotAfter = nil, "", time.Time{} }, nil},
		{"max TTL", func(r *AgentCertRequest) { r.TTL = MaxHostCertTTL }, nil},
		{"empty id", func(r *AgentCertRequest) { r.ID = "" }, []string{`agent id "" is not valid`}},
		{"id with slash", func(r *AgentCertRequest) { r.ID = "agent/1" }, []string{`agent id "agent/1" is not valid`}},
		{"id too long", func(r *AgentCertRequest) { r.ID = strings.Repeat("a", 64) }, []string{"agent id"}},
		{"invalid names", func(r *AgentCertRequest) { r.Names = []string{"web server", "a/b", "", "-x", "web"} }, []string{
			`resource name "web server"`, `resource name "a/b"`, `resource name ""`, `resource name "-x"`}},
		{"agent principal as a name", func(r *AgentCertRequest) { r.Names = []string{"agent/agent-2"} }, []string{`resource name "agent/agent-2"`}},
		{"zero TTL", func(r *AgentCertRequest) { r.TTL = 0 }, []string{"TTL 0s is not positive"}},
		{"TTL too long", func(r *AgentCertRequest) { r.TTL = MaxHostCertTTL + time.Second }, []string{"longer than the maximum"}},
		{"NotAfter in the past", func(r *AgentCertRequest) { r.NotAfter = t0.Add(-time.Second) }, []string{
			"renewal grant ended at 2026-05-06T07:08:08Z; it must join again"}},
		{"NotAfter now", func(r *AgentCertRequest) { r.NotAfter = t0 }, []string{"renewal grant ended"}},
		{"NotAfter in the past, real clock", func(r *AgentCertRequest) { r.Now, r.NotAfter = time.Time{}, time.Now().Add(-time.Minute) }, []string{"renewal grant ended"}},
		{"everything wrong", func(r *AgentCertRequest) {
			*r = AgentCertRequest{ID: "a b", Names: []string{"?"}, TTL: -time.Second, NotAfter: t0.Add(-time.Hour), Now: t0}
		}, []string{`agent id "a b"`, `resource name "?"`, "TTL -1s is not positive", "renewal grant ended"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			r.Names = slices.Clone(good.Names)
			tt.modify(&r)
			checkProblems(t, r.Validate(), tt.want)
		})
	}
}

func TestIssueAgentCert(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	const grant = `{"names":["web-*"],"labels":{"env":"dev"}}`
	cert, err := a.IssueAgentCert(key.PublicKey(), AgentCertRequest{
		ID: "agent-1", Names: []string{"web-1", "web-2", "web-1"}, Grant: grant, TTL: 24 * time.Hour, Now: t0,
	})
	if err != nil {
		t.Fatalf("IssueAgentCert: %v", err)
	}
	if cert.CertType != ssh.HostCert || cert.KeyId != "agent-1" {
		t.Errorf("got type %d id %q, want type %d id %q", cert.CertType, cert.KeyId, ssh.HostCert, "agent-1")
	}
	if want := []string{"agent/agent-1", "web-1", "web-2"}; !slices.Equal(cert.ValidPrincipals, want) {
		t.Errorf("ValidPrincipals: got %q, want %q", cert.ValidPrincipals, want)
	}
	if got := AgentPrincipal("agent-1"); got != "agent/agent-1" {
		t.Errorf("AgentPrincipal: got %q, want %q", got, "agent/agent-1")
	}
	if want := map[string]string{ExtAgentGrant: grant}; len(cert.Extensions) != 1 || cert.Extensions[ExtAgentGrant] != grant {
		t.Errorf("Extensions: got %q, want %q", cert.Extensions, want)
	}
	if len(cert.CriticalOptions) != 0 {
		t.Errorf("CriticalOptions: got %q, want none", cert.CriticalOptions)
	}
	if !sameKey(cert.SignatureKey, a.AgentCA.PublicKey()) {
		t.Error("SignatureKey: got another key than the agent CA")
	}
	if !sameKey(cert.Key, key.PublicKey()) {
		t.Error("Key: got another key than the one certified")
	}
	if got, want := cert.ValidAfter, uint64(t0.Add(-ClockSkew).Unix()); got != want {
		t.Errorf("ValidAfter: got %d, want %d", got, want)
	}
	if got, want := cert.ValidBefore, uint64(t0.Add(24*time.Hour).Unix()); got != want {
		t.Errorf("ValidBefore: got %d, want %d", got, want)
	}
	// The grant survives the wire format, under the agent CA's signature.
	parsed, err := ssh.ParsePublicKey(cert.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	checked, err := CheckAgentCert(a.AgentCA.PublicKey(), parsed, "agent-1", t0)
	if err != nil {
		t.Fatalf("CheckAgentCert of the parsed certificate: %v", err)
	}
	if got := checked.Extensions[ExtAgentGrant]; got != grant {
		t.Errorf("grant after the wire: got %q, want %q", got, grant)
	}
	// An SSH client that trusts the agent CA accepts it for a resource name.
	checker := &ssh.CertChecker{
		IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return sameKey(k, a.AgentCA.PublicKey()) },
		Clock:           func() time.Time { return t0 },
	}
	if err := checker.CheckHostKey("web-2:22", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}, cert); err != nil {
		t.Errorf("CertChecker for web-2: %v", err)
	}
	if err := checker.CheckHostKey("agent-1:22", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}, cert); err == nil {
		t.Error("CertChecker for agent-1: got nil, want the agent's own id refused as a host name")
	}

	t.Run("no grant", func(t *testing.T) {
		c, err := a.IssueAgentCert(key.PublicKey(), AgentCertRequest{ID: "agent-1", TTL: time.Hour, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Extensions) != 0 {
			t.Errorf("Extensions: got %q, want none", c.Extensions)
		}
		if want := []string{"agent/agent-1"}; !slices.Equal(c.ValidPrincipals, want) {
			t.Errorf("ValidPrincipals: got %q, want %q", c.ValidPrincipals, want)
		}
	})
}

func TestIssueAgentCertNotAfter(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	tests := []struct {
		name     string
		ttl      time.Duration
		notAfter time.Time
		want     time.Time // ValidBefore
	}{
		{"no NotAfter: TTL", 24 * time.Hour, time.Time{}, t0.Add(24 * time.Hour)},
		{"NotAfter sooner than TTL caps it", 24 * time.Hour, t0.Add(time.Hour), t0.Add(time.Hour)},
		{"NotAfter later than TTL: TTL", time.Hour, t0.Add(48 * time.Hour), t0.Add(time.Hour)},
		{"NotAfter one second ahead", time.Hour, t0.Add(time.Second), t0.Add(time.Second)},
		{"NotAfter with a fraction is cut to the second", time.Hour, t0.Add(time.Hour - 500*time.Millisecond), t0.Add(time.Hour - time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := a.IssueAgentCert(key.PublicKey(), AgentCertRequest{ID: "agent-1", TTL: tt.ttl, NotAfter: tt.notAfter, Now: t0})
			if err != nil {
				t.Fatalf("IssueAgentCert: %v", err)
			}
			if got, want := cert.ValidBefore, uint64(tt.want.Unix()); got != want {
				t.Errorf("ValidBefore: got %s, want %s", certTime(got), certTime(want))
			}
			if _, err := CheckAgentCert(a.AgentCA.PublicKey(), cert, "agent-1", tt.want.Add(-time.Second)); err != nil {
				t.Errorf("CheckAgentCert a second before the end: %v", err)
			}
			if _, err := CheckAgentCert(a.AgentCA.PublicKey(), cert, "agent-1", tt.want); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Errorf("CheckAgentCert at the end: got %v, want expired", err)
			}
		})
	}
}

func TestIssueAgentCertRefuses(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	good := AgentCertRequest{ID: "agent-1", TTL: time.Hour, Now: t0}
	cert, err := a.IssueAgentCert(key.PublicKey(), good)
	if err != nil {
		t.Fatal(err)
	}
	noAgentCA := &Authority{UserCA: a.UserCA, HostCA: a.HostCA}
	tests := []struct {
		name string
		a    *Authority
		pub  ssh.PublicKey
		req  AgentCertRequest
		want []string
	}{
		{"nil key", a, nil, good, []string{"no public key"}},
		{"certificate as key", a, cert, good, []string{"already a certificate"}},
		{"invalid names", a, key.PublicKey(), AgentCertRequest{ID: "agent-1", Names: []string{"web 1", "ok", "x/y"}, TTL: time.Hour, Now: t0},
			[]string{`resource name "web 1"`, `resource name "x/y"`}},
		{"NotAfter in the past", a, key.PublicKey(), AgentCertRequest{ID: "agent-1", TTL: time.Hour, Now: t0, NotAfter: t0.Add(-time.Hour)},
			[]string{"renewal grant ended"}},
		{"all problems at once", a, nil, AgentCertRequest{NotAfter: t0, Now: t0},
			[]string{"no public key", `agent id ""`, "TTL 0s", "renewal grant ended"}},
		{"no agent CA", noAgentCA, key.PublicKey(), good, []string{"no agent CA loaded"}},
		{"nil authority", nil, key.PublicKey(), good, []string{"no agent CA loaded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.a.IssueAgentCert(tt.pub, tt.req)
			checkProblems(t, err, tt.want)
			if c != nil {
				t.Errorf("got certificate %v with an error, want nil", c)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "issue agent certificate: ") {
				t.Errorf("got error %q, want it to start with %q", err, "issue agent certificate: ")
			}
		})
	}
}

func TestCheckAgentCert(t *testing.T) {
	a := newTestAuthority(t)
	foreign := newTestAuthority(t)
	key := newKey(t)
	agentCA := a.AgentCA.PublicKey()
	issue := func(a *Authority, id string, names ...string) *ssh.Certificate {
		c, err := a.IssueAgentCert(key.PublicKey(), AgentCertRequest{ID: id, Names: names, TTL: time.Hour, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := issue(a, "agent-1", "web")
	// A proxy's certificate, from the host CA, even one that claims the
	// agent's id and principal: it must never pass for an agent.
	proxy, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "agent-1", Principals: []string{AgentPrincipal("agent-1")}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	user, err := a.IssueUserCert(key.PublicKey(), UserCertRequest{User: "agent-1", Logins: []string{"agent-1"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	// Hand-made by the agent CA: the principal of agent-1, the KeyId of agent-2.
	mismatched := signCert(t, a.AgentCA, &ssh.Certificate{
		Key: key.PublicKey(), CertType: ssh.HostCert, KeyId: "agent-2",
		ValidPrincipals: []string{AgentPrincipal("agent-1")}, ValidBefore: ssh.CertTimeInfinity,
	})
	tampered := *issue(a, "agent-1")
	tampered.ValidPrincipals = []string{AgentPrincipal("agent-2")}
	tampered.KeyId = "agent-2"

	tests := []struct {
		name    string
		ca      ssh.PublicKey
		pub     ssh.PublicKey
		id      string
		now     time.Time
		wantErr string // in the error; "" means valid
	}{
		{"valid", agentCA, good, "agent-1", t0, ""},
		{"valid within clock skew", agentCA, good, "agent-1", t0.Add(-ClockSkew), ""},
		{"for another agent", agentCA, good, "agent-2", t0, `not for "agent/agent-2"`},
		{"resource name is not an agent id", agentCA, issue(a, "agent-1", "agent-2"), "agent-2", t0, `not for "agent/agent-2"`},
		{"KeyId of another agent", agentCA, mismatched, "agent-1", t0, `agent certificate is for agent "agent-2", not "agent-1"`},
		{"proxy certificate from the host CA", agentCA, proxy, "agent-1", t0, "not signed by the cluster"},
		{"checked against the host CA", a.HostCA.PublicKey(), good, "agent-1", t0, "not signed by the cluster"},
		{"agent CA of another cluster", agentCA, issue(foreign, "agent-1"), "agent-1", t0, "not signed by the cluster"},
		{"expired", agentCA, good, "agent-1", t0.Add(time.Hour), "expired"},
		{"not yet valid", agentCA, good, "agent-1", t0.Add(-ClockSkew - time.Second), "not valid before"},
		{"tampered", agentCA, &tampered, "agent-2", t0, "signature is invalid"},
		{"user certificate", agentCA, user, "agent-1", t0, "user certificate, not a host certificate"},
		{"plain key", agentCA, key.PublicKey(), "agent-1", t0, "not a certificate"},
		{"nil CA", nil, good, "agent-1", t0, "not signed by the cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := CheckAgentCert(tt.ca, tt.pub, tt.id, tt.now)
			if tt.wantErr == "" {
				if err != nil || cert == nil || cert.KeyId != tt.id {
					t.Fatalf("got %v, %v; want the certificate of %s", cert, err, tt.id)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "agent certificate") {
				t.Errorf("got error %v, want an agent certificate error holding %q", err, tt.wantErr)
			}
			if cert != nil {
				t.Error("got a certificate along with the error, want nil")
			}
		})
	}
}

// TestAgentAndProxyCertsDoNotMix checks the point of two host CAs: an
// agent's certificate does not pass the proxies' check, whatever names it
// holds, and a proxy's does not pass the agents'.
func TestAgentAndProxyCertsDoNotMix(t *testing.T) {
	a := newTestAuthority(t)
	key := newKey(t)
	// An agent that was granted the name of a proxy.
	agent, err := a.IssueAgentCert(key.PublicKey(), AgentCertRequest{ID: "proxy-1", Names: []string{"proxy-1"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := a.IssueHostCert(key.PublicKey(), HostCertRequest{ID: "proxy-1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckHostCert(agent, CertOptions{Authorities: []ssh.PublicKey{a.HostCA.PublicKey()}, Now: t0, Principal: "proxy-1"}); err == nil {
		t.Error("CheckHostCert(host CA) of an agent certificate naming proxy-1: got nil, want a refusal")
	}
	if _, err := CheckHostCert(proxy, CertOptions{Authorities: []ssh.PublicKey{a.HostCA.PublicKey()}, Now: t0, Principal: "proxy-1"}); err != nil {
		t.Errorf("CheckHostCert(host CA) of the proxy's certificate: %v", err)
	}
	if _, err := CheckAgentCert(a.AgentCA.PublicKey(), proxy, "proxy-1", t0); err == nil {
		t.Error("CheckAgentCert of a proxy certificate: got nil, want a refusal")
	}
	if _, err := CheckAgentCert(a.AgentCA.PublicKey(), agent, "proxy-1", t0); err != nil {
		t.Errorf("CheckAgentCert of the agent's certificate: %v", err)
	}
}
