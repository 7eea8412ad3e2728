package revtunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/streams"
)

// ErrJoinRefused means the proxy did not accept the join token.
var ErrJoinRefused = errors.New("join token refused")

// ErrProxyTaken means ClientConfig.BeforeHello refused the proxy Dial
// reached (the agent already has a tunnel to it): Dial closed the
// connection before the hello, so the proxy registered nothing and the
// agent's tunnel there is untouched. It says nothing against the proxy.
var ErrProxyTaken = errors.New("the agent already has a tunnel to this proxy")

// Trust says which proxy host certificates an agent accepts. Only proxies
// hold certificates from the cluster's proxy host CA (agents' come from
// another CA), so a certificate from it proves the peer is a proxy.
type Trust struct {
	// CA is the cluster's proxy host CA, stored when the agent joined.
	CA ssh.PublicKey
	// Pin, used while CA is unknown, is the SHA256 fingerprint of the host
	// CA (as `ssh-keygen -lf host_ca.pub` prints it). Empty with no CA
	// means trust on first use: the CA of the first proxy is accepted.
	Pin   string
	Clock func() time.Time
}

// hostKeyCallback checks the proxy's host certificate and reports it
// through seen.
func (t Trust) hostKeyCallback(seen **ssh.Certificate) ssh.HostKeyCallback {
	clock := t.Clock
	if clock == nil {
		clock = time.Now
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		cert, ok := key.(*ssh.Certificate)
		if !ok || cert.CertType != ssh.HostCert {
			return fmt.Errorf("proxy %s presented a plain host key, not a host certificate from the cluster CA", remote)
		}
		ca := t.CA
		switch {
		case ca != nil:
			if !bytes.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) {
				return fmt.Errorf("proxy %s: host certificate is not signed by the cluster host CA this agent joined", remote)
			}
		case t.Pin != "":
			if got := ssh.FingerprintSHA256(cert.SignatureKey); got != t.Pin {
				return fmt.Errorf("proxy %s: host CA fingerprint %s does not match ca_pin %s", remote, got, t.Pin)
			}
			ca = cert.SignatureKey
		default:
			ca = cert.SignatureKey // trust on first use
		}
		// Principals other than the proxy's id are not checked: agents
		// reach proxies by addresses that a load balancer may rewrite; the
		// CA is what identifies them, and the certificate names the proxy.
		if !model.ValidName(cert.KeyId) {
			return fmt.Errorf("proxy %s: host certificate names no proxy id", remote)
		}
		// An agent's certificate is never a proxy's, even before the CA is
		// known (trust on first use): it names an agent principal or
		// carries a grant.
		if _, grant := cert.Permissions.Extensions[pki.ExtAgentGrant]; grant || slices.ContainsFunc(cert.ValidPrincipals, func(p string) bool { return strings.HasPrefix(p, "agent/") }) {
			return fmt.Errorf("proxy %s presented an agent's certificate, not a proxy's", remote)
		}
		if _, err := pki.CheckHostCert(cert, pki.CertOptions{Authorities: []ssh.PublicKey{ca}, Now: clock(), Principal: cert.KeyId}); err != nil {
			return fmt.Errorf("proxy %s: host certificate: %w", remote, err)
		}
		if seen != nil {
			*seen = cert
		}
		return nil
	}
}

// Join joins the cluster through the proxy at addr with token. It returns
// the proxy's answer and the host CA that signed the proxy's certificate,
// which the agent must store and trust from now on.
func Join(ctx context.Context, addr, token string, req JoinRequest, trust Trust) (JoinResponse, ssh.PublicKey, error) {
	var proxyCert *ssh.Certificate
	cfg := &ssh.ClientConfig{
		User:            JoinUser,
		Auth:            []ssh.AuthMethod{ssh.Password(token)},
		HostKeyCallback: trust.hostKeyCallback(&proxyCert),
		ClientVersion:   "SSH-2.0-warren-agent",
	}
	conn, err := dialSSH(ctx, addr, cfg)
	if err != nil {
		if isAuthError(err) {
			return JoinResponse{}, nil, fmt.Errorf("join via %s: %w: check join_token in the agent config against the cluster's join_tokens file", addr, ErrJoinRefused)
		}
		return JoinResponse{}, nil, fmt.Errorf("join via %s: %w", addr, err)
	}
	defer conn.Close()
	go ssh.DiscardRequests(conn.reqs)
	go rejectChannels(conn.chans)
	ok, payload, err := sendRequest(ctx, conn.Conn, ReqJoin, encode(req))
	if err != nil {
		return JoinResponse{}, nil, fmt.Errorf("join via %s: %w", addr, err)
	}
	var resp JoinResponse
	if err := decode(payload, &resp); err != nil {
		return JoinResponse{}, nil, fmt.Errorf("join via %s: %w", addr, err)
	}
	if !ok || resp.Error != "" {
		return resp, nil, fmt.Errorf("join via %s refused: %s: %w", addr, resp.Error, ErrJoinRefused)
	}
	return resp, proxyCert.SignatureKey, nil
}

func isAuthError(err error) bool {
	return strings.Contains(err.Error(), "unable to authenticate")
}

// ClientConfig configures an agent's tunnel.
type ClientConfig struct {
	Addr    string
	AgentID string
	// Signer holds the agent's key with its host certificate.
	Signer ssh.Signer
	Trust  Trust
	// OnProxies is called with every proxy set the proxy sends.
	OnProxies func(ProxySet)
	// OnDefinitions is called with every definition set the proxy sends.
	OnDefinitions func(Definitions)
	// OnPolicy is called with every policy the proxy sends.
	OnPolicy func(PolicySet)
	// BeforeHello, if set, is called with the proxy's id (its host
	// certificate's KeyId) after the SSH handshake and before the hello.
	// The hello is what makes the proxy route to this tunnel, superseding
	// any other tunnel of the agent there; an error stops Dial short of
	// it, and Dial returns an error wrapping ErrProxyTaken and this one.
	BeforeHello func(proxyID string) error
	Logger      *slog.Logger
}

// ClientConn is the agent's end of one tunnel.
type ClientConn struct {
	Addr string
	// ProxyID is the proxy's id, as its certificate and hello say.
	ProxyID   string
	conn      *sshConn
	onProxies func(ProxySet)
	onDefs    func(Definitions)
	onPolicy  func(PolicySet)
	logger    *slog.Logger
}

type sshConn struct {
	ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
}

// dialSSH opens an SSH connection to addr. When the proxy turned it away
// with a busy line, the error wraps a *BusyError.
func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*sshConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	// What the proxy sends first is kept (a few hundred bytes): a proxy
	// that turns the connection away says so in a busy line there.
	pc := &prefaceConn{Conn: nc}
	c, chans, reqs, err := ssh.NewClientConn(pc, addr, cfg)
	stop()
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, pc.busy(err)
	}
	_ = nc.SetDeadline(time.Time{})
	streams.Shallow(nc)
	return &sshConn{Conn: c, chans: chans, reqs: reqs}, nil
}

// sendRequest sends a global request and waits for its reply or ctx.
func sendRequest(ctx context.Context, c ssh.Conn, name string, payload []byte) (bool, []byte, error) {
	type result struct {
		ok  bool
		p   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		ok, p, err := c.SendRequest(name, true, payload)
		done <- result{ok, p, err}
	}()
	select {
	case r := <-done:
		return r.ok, r.p, r.err
	case <-ctx.Done():
		// Closing the connection makes the pending request return.
		c.Close()
		return false, nil, fmt.Errorf("%s: %w", name, ctx.Err())
	}
}

// Dial opens a tunnel to cfg.Addr and says hello.
func Dial(ctx context.Context, cfg ClientConfig, hello Hello) (*ClientConn, HelloReply, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var proxyCert *ssh.Certificate
	sc := &ssh.ClientConfig{
		User:            cfg.AgentID,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback: cfg.Trust.hostKeyCallback(&proxyCert),
		ClientVersion:   "SSH-2.0-warren-agent",
	}
	conn, err := dialSSH(ctx, cfg.Addr, sc)
	if err != nil {
		if isAuthError(err) {
			return nil, HelloReply{}, fmt.Errorf("tunnel to %s: the proxy refused this agent's certificate (expired, revoked or from another cluster): %w", cfg.Addr, err)
		}
		return nil, HelloReply{}, fmt.Errorf("tunnel to %s: %w", cfg.Addr, err)
	}
	if cfg.BeforeHello != nil {
		if err := cfg.BeforeHello(proxyCert.KeyId); err != nil {
			conn.Close()
			return nil, HelloReply{}, fmt.Errorf("tunnel to %s (proxy %s): %w: %w", cfg.Addr, model.Quote(proxyCert.KeyId), ErrProxyTaken, err)
		}
	}
	c := &ClientConn{Addr: cfg.Addr, conn: conn, onProxies: cfg.OnProxies, onDefs: cfg.OnDefinitions, onPolicy: cfg.OnPolicy, logger: logger}
	go c.answerRequests()
	ok, payload, err := sendRequest(ctx, conn, ReqHello, encode(hello))
	if err != nil {
		conn.Close()
		return nil, HelloReply{}, fmt.Errorf("tunnel to %s: hello: %w", cfg.Addr, err)
	}
	var reply HelloReply
	if err := decode(payload, &reply); err != nil || !ok {
		conn.Close()
		if err == nil {
			err = errors.New(reply.Error)
		}
		return nil, HelloReply{}, fmt.Errorf("tunnel to %s: hello refused: %w", cfg.Addr, err)
	}
	if reply.ProxyID != proxyCert.KeyId {
		conn.Close()
		return nil, HelloReply{}, fmt.Errorf("tunnel to %s: the proxy says it is %s but its certificate is for %s", cfg.Addr, model.Quote(reply.ProxyID), model.Quote(proxyCert.KeyId))
	}
	c.ProxyID = reply.ProxyID
	return c, reply, nil
}

// answerRequests replies to the proxy's keepalives (and anything else).
func (c *ClientConn) answerRequests() {
	for req := range c.conn.reqs {
		if req.Type == ReqProxies && c.onProxies != nil {
			var set ProxySet
			if err := decode(req.Payload, &set); err == nil {
				c.onProxies(set)
			}
		}
		if req.Type == ReqDefinitions && c.onDefs != nil {
			var d Definitions
			if err := decode(req.Payload, &d); err == nil {
				c.onDefs(d)
			}
		}
		if req.Type == ReqPolicy && c.onPolicy != nil {
			var p PolicySet
			if err := decode(req.Payload, &p); err == nil {
				c.onPolicy(p)
			}
		}
		if req.WantReply {
			_ = req.Reply(req.Type == ReqKeepalive, nil)
		}
	}
}

// Heartbeat sends hb and waits for the proxy's answer: the resources it
// refused (outside this agent's grant), if any.
func (c *ClientConn) Heartbeat(ctx context.Context, hb Heartbeat) (HeartbeatReply, error) {
	ok, payload, err := sendRequest(ctx, c.conn, ReqHeartbeat, encode(hb))
	if err != nil {
		return HeartbeatReply{}, fmt.Errorf("heartbeat to %s: %w", c.Addr, err)
	}
	if !ok {
		return HeartbeatReply{}, fmt.Errorf("heartbeat to %s refused: %s", c.Addr, model.QuoteN(string(payload), 1024))
	}
	var reply HeartbeatReply
	if len(payload) > 0 {
		if err := decode(payload, &reply); err != nil {
			return HeartbeatReply{}, fmt.Errorf("heartbeat to %s: %w", c.Addr, err)
		}
	}
	return reply, nil
}

// Renew asks the proxy for a fresh certificate.
func (c *ClientConn) Renew(ctx context.Context) (string, error) {
	_, payload, err := sendRequest(ctx, c.conn, ReqRenew, nil)
	if err != nil {
		return "", fmt.Errorf("renew via %s: %w", c.Addr, err)
	}
	var reply RenewReply
	if err := decode(payload, &reply); err != nil {
		return "", fmt.Errorf("renew via %s: %w", c.Addr, err)
	}
	if reply.Error != "" {
		return "", fmt.Errorf("renew via %s refused: %s", c.Addr, reply.Error)
	}
	return reply.HostCert, nil
}

// ReportLogin tells the proxy which login a session took; it does not wait.
func (c *ClientConn) ReportLogin(l Login) error {
	_, _, err := c.conn.SendRequest(ReqLogin, false, encode(l))
	return err
}

// Accept returns the next dial request from the proxy, or an error when
// the tunnel is closed. The caller must Accept or Reject the channel.
func (c *ClientConn) Accept() (DialRequest, ssh.NewChannel, error) {
	for nch := range c.conn.chans {
		if nch.ChannelType() != ChanDial {
			_ = nch.Reject(ssh.UnknownChannelType, "unknown channel type")
			continue
		}
		var req DialRequest
		if err := decode(nch.ExtraData(), &req); err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, "malformed dial request")
			continue
		}
		return req, nch, nil
	}
	return DialRequest{}, nil, net.ErrClosed
}

// Wait blocks until the tunnel closes.
func (c *ClientConn) Wait() error { return c.conn.Wait() }

// Close closes the tunnel.
func (c *ClientConn) Close() error { return c.conn.Close() }
