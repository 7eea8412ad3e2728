package agent

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/warren-proxy/warren/transport/pki"
	"golang.org/x/crypto/ssh"
)

// renewCert stores a certificate a proxy issued in its hello.
func (a *Agent) renewCert(certText string) {
	if certText == "" {
		return
	}
	if err := a.signer.renew([]byte(certText), pki.AgentPrincipal(a.id.AgentID), a.cfg.Clock()); err != nil {
		a.log.Warn("proxy sent an unusable certificate", "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.id.HostCert = []byte(certText)
	a.id.UpdatedAt = a.cfg.Clock()
	if err := a.store.Save(a.id); err != nil {
		a.log.Warn("save renewed certificate", "err", err)
	}
}

// renewDue reports whether the host certificate has passed half its life
// and no renewal was tried in the last minute (a proxy that refuses, say
// at the end of the agent's renewal grant, is not asked every heartbeat).
func (a *Agent) renewDue() bool {
	cert := a.signer.cert()
	if cert == nil || cert.ValidBefore == ssh.CertTimeInfinity || cert.ValidBefore <= cert.ValidAfter {
		return false
	}
	now := a.cfg.Clock()
	half := time.Unix(int64(cert.ValidAfter+(cert.ValidBefore-cert.ValidAfter)/2), 0)
	if now.Before(half) || now.UnixNano()-a.renewTried.Load() < int64(time.Minute) {
		return false
	}
	a.renewTried.Store(now.UnixNano())
	return true
}

// renewableSigner presents the agent's current host certificate; a proxy
// may renew it on every tunnel, and new SSH handshakes use the new one.
type renewableSigner struct {
	key ssh.Signer
	cur atomic.Pointer[ssh.Signer]
}

// renew presents certText from now on. A renewal (there is a certificate
// already) must come from the same authority as the current one, be a host
// certificate for principal, and be valid at now: a proxy cannot hand the
// agent a certificate other proxies would not take, nor one from another
// CA. The key must be the agent's own.
func (s *renewableSigner) renew(certText []byte, principal string, now time.Time) error {
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certText)
	if err != nil {
		return fmt.Errorf("parse host certificate: %w", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return errors.New("host certificate: not a certificate")
	}
	if cur := s.current(); cur != nil {
		if _, err := pki.CheckHostCert(cert, pki.CertOptions{
			Authorities: []ssh.PublicKey{cur.SignatureKey}, AuthorityName: "agent CA that signed the current certificate",
			Now: now, Principal: principal,
		}); err != nil {
			return fmt.Errorf("renewed host certificate refused: %w", err)
		}
	}
	cs, err := ssh.NewCertSigner(cert, s.key)
	if err != nil {
		return fmt.Errorf("host certificate: %w", err)
	}
	s.cur.Store(&cs)
	return nil
}

func (s *renewableSigner) signer() ssh.Signer { return *s.cur.Load() }

// current is the certificate presented now, or nil before the first.
func (s *renewableSigner) current() *ssh.Certificate {
	p := s.cur.Load()
	if p == nil {
		return nil
	}
	c, _ := (*p).PublicKey().(*ssh.Certificate)
	return c
}

// cert is the certificate presented now.
func (s *renewableSigner) cert() *ssh.Certificate {
	c, _ := s.signer().PublicKey().(*ssh.Certificate)
	return c
}

func (s *renewableSigner) PublicKey() ssh.PublicKey { return s.signer().PublicKey() }

func (s *renewableSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return s.signer().Sign(r, data)
}

func (s *renewableSigner) SignWithAlgorithm(r io.Reader, data []byte, alg string) (*ssh.Signature, error) {
	return s.signer().(ssh.AlgorithmSigner).SignWithAlgorithm(r, data, alg)
}

func (s *renewableSigner) Algorithms() []string {
	return s.signer().(ssh.MultiAlgorithmSigner).Algorithms()
}
