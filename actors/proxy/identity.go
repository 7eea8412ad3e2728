package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// ownCertTTL is the validity of the proxy's own host certificate, issued
// afresh at every start.
const ownCertTTL = pki.MaxHostCertTTL

// loadHostKey loads (or creates) the proxy's host key and certifies it
// with the cluster's proxy host CA for the names users and agents reach
// it by. It returns the certificate's signer and the plain keys': clients
// without certificate support pin those (`warren known-hosts`); the ECDSA
// one is for clients that take no Ed25519 keys.
func (p *Proxy) loadHostKey() (cert ssh.Signer, plain []ssh.Signer, err error) {
	key, err := p.hostKeyFile("host_key", pki.KeyEd25519)
	if err != nil {
		return nil, nil, err
	}
	ecdsaKey, err := p.hostKeyFile("host_key_ecdsa", pki.KeyECDSA)
	if err != nil {
		return nil, nil, err
	}
	principals := []string{"localhost", pki.AnyProxyPrincipal}
	for _, addr := range []string{p.cfg.PublicAddr, p.cfg.Listen.User, p.cfg.Listen.Tunnel} {
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
			principals = append(principals, host)
		}
	}
	c, err := p.auth.IssueHostCert(key.PublicKey(), pki.HostCertRequest{
		ID: p.cfg.ID, Principals: principals, TTL: ownCertTTL, Now: p.cfg.Clock(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("certify host key: %w", err)
	}
	cert, err = ssh.NewCertSigner(c, key)
	return cert, []ssh.Signer{key, ecdsaKey}, err
}

// hostKeyFile loads the host key in the data directory's file, making one
// of type typ the first time.
func (p *Proxy) hostKeyFile(file, typ string) (ssh.Signer, error) {
	path := filepath.Join(p.cfg.DataDir, file)
	pemBytes, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, pemBytes, err = pki.GenerateKeyType(typ); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return nil, fmt.Errorf("write host key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	key, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("parse host key %s: %w", path, err)
	}
	return key, nil
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// checkJoinToken accepts, at authentication, a token the cluster knows:
// a static one from the join_tokens file or one `warren token add` made.
// Whether it may still be used is join's to say, so the agent hears why.
func (p *Proxy) checkJoinToken(secret string) bool {
	if p.auth.CheckJoinToken(secret) {
		return true
	}
	_, ok := p.table.Snapshot().Policy.FindToken(secret)
	return ok
}

// joinGrant turns the token an agent joined with into its grant, counting
// one use of a use-limited token at the proxy that made it.
func (p *Proxy) joinGrant(secret, agentID string) (access.Grant, error) {
	now := p.cfg.Clock()
	pol := p.table.Snapshot().Policy
	if p.auth.CheckJoinToken(secret) {
		// A static token: unscoped, renewed for the default time.
		g := access.Grant{Token: access.TokenID(secret), RenewUntil: now.Add(access.DefaultRenewFor)}
		if l, ok := pol.Locked(access.LockToken, g.Token, now); ok {
			return access.Grant{}, errors.New(l.Sentence())
		}
		return g, nil
	}
	t, ok := pol.FindToken(secret)
	if !ok {
		return access.Grant{}, errors.New("unknown join token; ask an administrator for one (`warren token add`)")
	}
	if err := t.Redeemable(pol, now); err != nil {
		return access.Grant{}, err
	}
	if t.Uses > 0 {
		if err := p.redeem(t, agentID); err != nil {
			return access.Grant{}, err
		}
	}
	g := t.Grant
	g.Token = t.ID
	g.RenewUntil = now.Add(t.RenewFor)
	return g, nil
}

// redeem counts one use of t at its origin proxy (this one or a peer).
func (p *Proxy) redeem(t access.Token, agentID string) error {
	pid := p.router
	if t.Origin != p.cfg.ID {
		addr := ""
		for _, m := range p.members.Members() {
			if m.ProxyID == t.Origin {
				addr = m.PeerAddr
			}
		}
		if addr == "" {
			return fmt.Errorf("join token %s can only be used while proxy %s, which made it, is reachable; it is not", t.ID, t.Origin)
		}
		pid = actor.NewPID(addr, router.RouterName)
	}
	res, err := p.system.Root.RequestFuture(pid, &clusterpb.TokenRedeem{Id: t.ID, Hash: t.Hash, Agent: agentID}, 5*time.Second).Result()
	if err != nil {
		return fmt.Errorf("count a use of join token %s at proxy %s: %w", t.ID, t.Origin, err)
	}
	r, ok := res.(*clusterpb.TokenRedeemResult)
	if !ok {
		return fmt.Errorf("count a use of join token %s: unexpected answer %T", t.ID, res)
	}
	if !r.Ok {
		return errors.New(r.Error)
	}
	return nil
}

// join issues an identity to a new agent: an id (its requested name with a
// random suffix, so two hosts with one name never collide), its grant from
// the token, and a host certificate for the names the grant allows.
func (p *Proxy) join(req revtunnel.JoinRequest, token string, remote net.Addr) (revtunnel.JoinResponse, error) {
	if len(req.PublicKey) > 16<<10 || len(req.Principals) > revtunnel.MaxResources {
		return revtunnel.JoinResponse{}, errors.New("join request too large")
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.PublicKey))
	if err != nil {
		return revtunnel.JoinResponse{}, fmt.Errorf("public_key: %w", err)
	}
	base := req.Name
	if base == "" {
		base = req.Hostname
	}
	if len(base) > 256 {
		base = base[:256]
	}
	base = strings.Trim(unsafeID.ReplaceAllString(base, "-"), "-._")
	if len(base) > 40 {
		base = base[:40]
	}
	if base == "" {
		base = "agent"
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	id := base + "-" + hex.EncodeToString(suffix[:])
	grant, err := p.joinGrant(token, id)
	if err != nil {
		return revtunnel.JoinResponse{}, err
	}
	cert, refused, err := p.issueAgentCert(id, pub, grant, req.Principals)
	if err != nil {
		return revtunnel.JoinResponse{}, err
	}
	p.log.Info("agent joined", "agent", id, "remote", remote.String(), "hostname", model.Quote(req.Hostname), "token", grant.Token, "names", strings.Join(certNames(cert), ","))
	return revtunnel.JoinResponse{
		AgentID:  id,
		HostCert: string(ssh.MarshalAuthorizedKey(cert)),
		UserCA:   string(ssh.MarshalAuthorizedKey(p.auth.UserCA.PublicKey())),
		Refused:  refused,
	}, nil
}

// issueAgentCert certifies an agent for the names among requested that its
// grant allows (claiming free names for an unscoped grant) and says which
// it refused.
func (p *Proxy) issueAgentCert(id string, pub ssh.PublicKey, g access.Grant, requested []string) (*ssh.Certificate, []revtunnel.Refused, error) {
	var valid []string
	var refused []revtunnel.Refused
	for _, n := range requested {
		if model.ValidName(n) {
			valid = append(valid, n)
		} else {
			refused = append(refused, revtunnel.Refused{Name: model.Quote(n), Reason: "not a valid resource name"})
		}
	}
	res, err := p.system.Root.RequestFuture(p.router, &router.ClaimNames{AgentID: id, Grant: g, Names: valid}, 10*time.Second).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("check the agent's names: %w", err)
	}
	cr, ok := res.(*router.ClaimResult)
	if !ok {
		return nil, nil, fmt.Errorf("check the agent's names: unexpected answer %T", res)
	}
	for _, r := range cr.Refused {
		refused = append(refused, revtunnel.Refused{Name: r.Name, Reason: r.Reason})
	}
	p.metrics.decisions.WithLabelValues("agent_name", "allowed").Add(float64(len(cr.Names)))
	p.metrics.decisions.WithLabelValues("agent_name", "denied").Add(float64(len(refused)))
	cert, err := p.auth.IssueAgentCert(pub, pki.AgentCertRequest{
		ID: id, Names: cr.Names, Grant: g.Encode(), TTL: p.cfg.Tunnel.CertTTL, NotAfter: g.RenewUntil, Now: p.cfg.Clock(),
	})
	if err != nil {
		return nil, nil, err
	}
	return cert, refused, nil
}

// certNames are the resource names a certificate is valid for.
func certNames(cert *ssh.Certificate) []string {
	var out []string
	for _, pr := range cert.ValidPrincipals {
		if pr != pki.AgentPrincipal(cert.KeyId) {
			out = append(out, pr)
		}
	}
	return out
}

// agentGrant reads the grant an agent's certificate carries.
func agentGrant(cert *ssh.Certificate) (access.Grant, error) {
	text, ok := cert.Permissions.Extensions[pki.ExtAgentGrant]
	if !ok {
		return access.Grant{}, errors.New("the agent's certificate carries no grant; join it again with a token")
	}
	return access.DecodeGrant(text)
}

// authorizeAgent admits an agent whose certificate is valid unless it, or
// the token it joined with, is locked.
func (p *Proxy) authorizeAgent(cert *ssh.Certificate) (err error) {
	defer func() { p.metrics.decision("agent", err == nil) }()
	g, err := agentGrant(cert)
	if err != nil {
		return err
	}
	if l, ok := p.table.Snapshot().Policy.AgentLocked(cert.KeyId, g, p.cfg.Clock()); ok {
		return errors.New(l.Sentence())
	}
	return nil
}

// hello answers an agent's hello on a new tunnel with a renewed
// certificate for the names it serves now, and the proxy set.
func (p *Proxy) hello(conn *revtunnel.ServerConn, h revtunnel.Hello) revtunnel.HelloReply {
	reply := revtunnel.HelloReply{
		ProxyID: p.cfg.ID,
		Region:  p.cfg.Region,
		Proxies: p.proxySet(),
	}
	if p.table != nil {
		reply.Definitions = p.table.Snapshot().Definitions
	}
	reply.Policy = p.policySet()
	if r := p.renewAgent(conn, h.Principals); r.Error != "" {
		p.log.Warn("renew agent certificate", "agent", conn.AgentID, "err", r.Error)
	} else {
		reply.HostCert = r.HostCert
	}
	return reply
}

// renew answers an agent's renewal request: the names of its current
// certificate, checked against its grant again.
func (p *Proxy) renew(conn *revtunnel.ServerConn) revtunnel.RenewReply {
	return p.renewAgent(conn, certNames(conn.Cert))
}

func (p *Proxy) renewAgent(conn *revtunnel.ServerConn, principals []string) revtunnel.RenewReply {
	g, err := agentGrant(conn.Cert)
	if err != nil {
		return revtunnel.RenewReply{Error: err.Error()}
	}
	if l, ok := p.table.Snapshot().Policy.AgentLocked(conn.AgentID, g, p.cfg.Clock()); ok {
		return revtunnel.RenewReply{Error: l.Sentence()}
	}
	cert, _, err := p.issueAgentCert(conn.AgentID, conn.Cert.Key, g, principals)
	if err != nil {
		return revtunnel.RenewReply{Error: err.Error()}
	}
	return revtunnel.RenewReply{HostCert: string(ssh.MarshalAuthorizedKey(cert))}
}
