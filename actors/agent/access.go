package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/transport/nodessh"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// policyLearned takes the cluster's roles from a proxy.
func (a *Agent) policyLearned(set *revtunnel.PolicySet) {
	if set == nil {
		return
	}
	var roles []access.Role
	var locks []access.Lock
	if err := json.Unmarshal(set.Roles, &roles); err != nil {
		a.log.Warn("proxy sent roles that do not decode; keeping the previous ones", "err", err)
		return
	}
	if len(set.Locks) > 0 {
		if err := json.Unmarshal(set.Locks, &locks); err != nil {
			a.log.Warn("proxy sent locks that do not decode; keeping the previous ones", "err", err)
			return
		}
	}
	pol := access.NewPolicy(roles, locks, nil, nil)
	a.policy.Store(pol)
	if a.node != nil {
		// Users locked since their login: their sessions end, told why.
		now := a.cfg.Clock()
		a.node.Evict(func(ext map[string]string) string {
			if l, ok := pol.Locked(access.LockUser, ext[pki.ExtUser], now); ok {
				return l.Sentence()
			}
			return ""
		})
	}
}

// authorizeLogin is the SSH server's check of a login against the
// cluster's roles, for the resource the connection was dialed for: the
// entry proxy decided before it dialed, and the node decides again.
func (a *Agent) authorizeLogin(conn net.Conn, login string, cert *ssh.Certificate) error {
	pol, target, id, err := a.decisionInputs(conn, cert)
	if err != nil {
		return fmt.Errorf("access denied: %w", err)
	}
	if reason := pol.CheckIdentity(id, a.cfg.Clock()); reason != "" {
		return errors.New(reason)
	}
	if d := pol.Login(id, target, login); !d.Allowed {
		return errors.New(d.Reason)
	}
	return nil
}

// allowForwarding asks the cluster's roles whether the user may forward
// (ports, or their SSH agent) on the resource the connection was dialed
// for; the certificate's permit-* extensions were checked already.
func (a *Agent) allowForwarding(conn net.Conn, login string, cert *ssh.Certificate, kind string) error {
	pol, target, id, err := a.decisionInputs(conn, cert)
	if err != nil {
		return err
	}
	what := "port"
	if kind == nodessh.ForwardAgent {
		what = "agent"
	}
	if !pol.Forwarding(id, target, what) {
		return fmt.Errorf("your roles (%s) do not allow %s forwarding on %s", strings.Join(id.Roles, ", "), what, target.Name)
	}
	return nil
}

// decisionInputs gathers what an access decision on the node needs: the
// cluster's roles as the proxies pushed them, the resource the connection
// was dialed for (with the grant's labels, as the proxies route it), and
// the user as their certificate says.
func (a *Agent) decisionInputs(conn net.Conn, cert *ssh.Certificate) (*access.Policy, access.Target, access.Identity, error) {
	sc, ok := conn.(*sessionConn)
	if !ok {
		return nil, access.Target{}, access.Identity{}, errors.New("not a session dialed by a proxy")
	}
	pol := a.policy.Load()
	if pol == nil {
		return nil, access.Target{}, access.Identity{}, errors.New("this agent has not received the cluster's roles yet; try again")
	}
	var target *access.Target
	for _, r := range a.resources() {
		if r.Name == sc.resource {
			target = &access.Target{Name: r.Name, Kind: r.Kind, Labels: a.stampedLabels(r.Labels)}
		}
	}
	if target == nil {
		return nil, access.Target{}, access.Identity{}, fmt.Errorf("this agent does not serve %s", sc.resource)
	}
	user, roles := pki.UserFromCert(cert)
	id := access.Identity{User: user, Roles: roles, Logins: cert.ValidPrincipals, CertTTL: pki.CertTTL(cert)}
	return pol, *target, id, nil
}

// stampedLabels are a resource's labels as the proxies route it: with the
// labels of this agent's grant stamped on.
func (a *Agent) stampedLabels(labels map[string]string) map[string]string {
	cert := a.signer.cert()
	if cert == nil {
		return labels
	}
	g, err := access.DecodeGrant(cert.Permissions.Extensions[pki.ExtAgentGrant])
	if err != nil || len(g.Labels) == 0 {
		return labels
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, g.Labels)
	return out
}
