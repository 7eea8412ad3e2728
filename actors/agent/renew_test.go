package agent

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/transport/pki"
)

// TestRenewalMustComeFromTheSameAuthority: a proxy renewing an agent's
// certificate cannot switch it to another CA, to another agent's name, to
// a user certificate, to an expired one, or to another key.
func TestRenewalMustComeFromTheSameAuthority(t *testing.T) {
	now := time.Now()
	auth, err := pki.Init(t.TempDir(), pki.InitOptions{ClusterName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.Init(t.TempDir(), pki.InitOptions{ClusterName: "other"})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _, _ := pki.GenerateKey()
	issue := func(a *pki.Authority, pub ssh.PublicKey, id string, ttl time.Duration, at time.Time) []byte {
		t.Helper()
		c, err := a.IssueAgentCert(pub, pki.AgentCertRequest{ID: id, Names: []string{"node1"}, TTL: ttl, Now: at})
		if err != nil {
			t.Fatal(err)
		}
		return ssh.MarshalAuthorizedKey(c)
	}
	s := &renewableSigner{key: key}
	principal := pki.AgentPrincipal("a1")
	if err := s.renew(issue(auth, key.PublicKey(), "a1", time.Hour, now), principal, now); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	userCert, err := auth.IssueUserCert(key.PublicKey(), pki.UserCertRequest{User: "alice", Logins: []string{"alice"}, Roles: []string{"admin"}, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name string
		cert []byte
	}{
		{"another CA", issue(other, key.PublicKey(), "a1", time.Hour, now)},
		{"another agent's name", issue(auth, key.PublicKey(), "a2", time.Hour, now)},
		{"expired", issue(auth, key.PublicKey(), "a1", 10*time.Minute, now.Add(-2*time.Hour))},
		{"another key", issue(auth, otherKey.PublicKey(), "a1", time.Hour, now)},
		{"a user certificate", ssh.MarshalAuthorizedKey(userCert)},
	}
	before := s.cert().Serial
	for _, r := range refused {
		if err := s.renew(r.cert, principal, now); err == nil {
			t.Errorf("%s: renewal accepted", r.name)
		} else if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: unclear error %q", r.name, err)
		}
		if s.cert().Serial != before {
			t.Fatalf("%s: the refused certificate is in use", r.name)
		}
	}
	if err := s.renew(issue(auth, key.PublicKey(), "a1", 2*time.Hour, now), principal, now); err != nil {
		t.Errorf("a good renewal: %v", err)
	}
}
