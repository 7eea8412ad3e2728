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

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// loadHostKey loads (or creates) the proxy's host key and certifies it
// with the cluster host CA for the names users and agents reach it by.
func (p *Proxy) loadHostKey() (ssh.Signer, error) {
	path := filepath.Join(p.cfg.DataDir, "host_key")
	pemBytes, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, pemBytes, err = pki.GenerateKey(); err != nil {
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
	principals := []string{"localhost"}
	for _, addr := range []string{p.cfg.PublicAddr, p.cfg.Listen.User, p.cfg.Listen.Tunnel} {
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
			principals = append(principals, host)
		}
	}
	cert, err := p.auth.IssueHostCert(key.PublicKey(), pki.HostCertRequest{
		ID: p.cfg.ID, Principals: principals, TTL: p.cfg.Tunnel.CertTTL, Now: p.cfg.Clock(),
	})
	if err != nil {
		return nil, fmt.Errorf("certify host key: %w", err)
	}
	return ssh.NewCertSigner(cert, key)
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// join issues an identity to a new agent: an id (its requested name with a
// random suffix, so two hosts with one name never collide) and a host
// certificate.
func (p *Proxy) join(req revtunnel.JoinRequest, remote net.Addr) (revtunnel.JoinResponse, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.PublicKey))
	if err != nil {
		return revtunnel.JoinResponse{}, fmt.Errorf("public_key: %w", err)
	}
	base := req.Name
	if base == "" {
		base = req.Hostname
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
	cert, err := p.issueAgentCert(id, pub, req.Principals)
	if err != nil {
		return revtunnel.JoinResponse{}, err
	}
	p.log.Info("agent joined", "agent", id, "remote", remote.String(), "hostname", req.Hostname)
	return revtunnel.JoinResponse{
		AgentID:  id,
		HostCert: string(ssh.MarshalAuthorizedKey(cert)),
		UserCA:   string(ssh.MarshalAuthorizedKey(p.auth.UserCA.PublicKey())),
	}, nil
}

func (p *Proxy) issueAgentCert(id string, pub ssh.PublicKey, principals []string) (*ssh.Certificate, error) {
	var valid []string
	for _, pr := range principals {
		if revtunnel.ValidName(pr) {
			valid = append(valid, pr)
		}
	}
	return p.auth.IssueHostCert(pub, pki.HostCertRequest{ID: id, Principals: valid, TTL: p.cfg.Tunnel.CertTTL, Now: p.cfg.Clock()})
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
	cert, err := p.issueAgentCert(conn.AgentID, conn.Cert.Key, h.Principals)
	if err != nil {
		p.log.Warn("renew agent certificate", "agent", conn.AgentID, "err", err)
	} else {
		reply.HostCert = string(ssh.MarshalAuthorizedKey(cert))
	}
	return reply
}
