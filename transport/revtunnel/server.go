package revtunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrJoined is returned by Server.Handshake for a join connection: the
// join was served and the connection closed; there is no tunnel.
var ErrJoined = errors.New("join served")

// ServerConfig configures the proxy side of the tunnel protocol.
type ServerConfig struct {
	// HostSigner is the proxy's host key, normally wrapping a host
	// certificate from the cluster host CA.
	HostSigner ssh.Signer
	// HostCA signs agent certificates; only agents holding one connect.
	HostCA ssh.PublicKey
	// CheckJoinToken reports whether a join token is valid.
	CheckJoinToken func(token string) bool
	// Join issues the identity of a joining agent.
	Join func(req JoinRequest, remote net.Addr) (JoinResponse, error)
	// HandshakeTimeout bounds the SSH handshake and the join exchange.
	HandshakeTimeout time.Duration
	Clock            func() time.Time
	Logger           *slog.Logger
}

// Validate reports every missing field at once.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.HostSigner == nil {
		errs = append(errs, errors.New("HostSigner is required"))
	}
	if c.HostCA == nil {
		errs = append(errs, errors.New("HostCA is required"))
	}
	if c.CheckJoinToken == nil {
		errs = append(errs, errors.New("CheckJoinToken is required"))
	}
	if c.Join == nil {
		errs = append(errs, errors.New("Join is required"))
	}
	return errors.Join(errs...)
}

// Server accepts agent tunnels.
type Server struct {
	cfg ServerConfig
	ssh *ssh.ServerConfig
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel server config: %w", err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	sc := &ssh.ServerConfig{
		PasswordCallback:  s.checkJoin,
		PublicKeyCallback: s.checkAgent,
		ServerVersion:     "SSH-2.0-warren-tunnel",
		MaxAuthTries:      3,
	}
	sc.AddHostKey(cfg.HostSigner)
	s.ssh = sc
	return s, nil
}

const permJoin = "warren-join"

func (s *Server) checkJoin(meta ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
	if meta.User() != JoinUser {
		return nil, fmt.Errorf("password auth is only for user %q", JoinUser)
	}
	if !s.cfg.CheckJoinToken(string(password)) {
		s.cfg.Logger.Warn("join refused: invalid token", "remote", meta.RemoteAddr().String())
		return nil, errors.New("invalid join token")
	}
	return &ssh.Permissions{Extensions: map[string]string{permJoin: "1"}}, nil
}

func (s *Server) checkAgent(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	if err := CheckAgentCert(s.cfg.HostCA, key, meta.User(), s.cfg.Clock()); err != nil {
		s.cfg.Logger.Warn("tunnel refused", "remote", meta.RemoteAddr().String(), "agent", meta.User(), "err", err)
		return nil, err
	}
	return &ssh.Permissions{ExtraData: map[any]any{certKey{}: key.(*ssh.Certificate)}}, nil
}

type certKey struct{}

// CheckAgentCert verifies that key is a valid host certificate from hostCA
// whose key id is agentID.
func CheckAgentCert(hostCA, key ssh.PublicKey, agentID string, now time.Time) error {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return errors.New("agent key is not a certificate")
	}
	if cert.CertType != ssh.HostCert {
		return errors.New("agent certificate is not a host certificate")
	}
	if !bytes.Equal(cert.SignatureKey.Marshal(), hostCA.Marshal()) {
		return errors.New("agent certificate is not signed by the cluster host CA")
	}
	if cert.KeyId != agentID {
		return fmt.Errorf("certificate is for agent %q, not %q", cert.KeyId, agentID)
	}
	checker := ssh.CertChecker{Clock: func() time.Time { return now }}
	if err := checker.CheckCert(agentID, cert); err != nil {
		return fmt.Errorf("agent certificate: %w", err)
	}
	return nil
}

// Handshake runs the SSH handshake on nc. For an agent tunnel it returns
// the ServerConn. For a join connection it serves the join, closes nc and
// returns ErrJoined. On any error nc is closed.
func (s *Server) Handshake(ctx context.Context, nc net.Conn) (*ServerConn, error) {
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	sconn, chans, reqs, err := ssh.NewServerConn(nc, s.ssh)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("tunnel handshake from %s: %w", nc.RemoteAddr(), err)
	}
	if sconn.Permissions != nil && sconn.Permissions.Extensions[permJoin] != "" {
		defer sconn.Close()
		go rejectChannels(chans)
		return nil, s.serveJoin(sconn, reqs)
	}
	_ = nc.SetDeadline(time.Time{})
	cert, _ := sconn.Permissions.ExtraData[certKey{}].(*ssh.Certificate)
	return &ServerConn{AgentID: sconn.User(), Cert: cert, conn: sconn, chans: chans, reqs: reqs, logger: s.cfg.Logger}, nil
}

func (s *Server) serveJoin(sconn *ssh.ServerConn, reqs <-chan *ssh.Request) error {
	for req := range reqs {
		if req.Type != ReqJoin {
			_ = req.Reply(false, nil)
			continue
		}
		var jr JoinRequest
		var resp JoinResponse
		if err := decode(req.Payload, &jr); err != nil {
			resp.Error = "malformed join request: " + err.Error()
		} else if r, err := s.cfg.Join(jr, sconn.RemoteAddr()); err != nil {
			resp.Error = err.Error()
		} else {
			resp = r
		}
		_ = req.Reply(resp.Error == "", encode(resp))
		if resp.Error != "" {
			return fmt.Errorf("join from %s: %s", sconn.RemoteAddr(), resp.Error)
		}
		return ErrJoined
	}
	return fmt.Errorf("join from %s: connection closed before the join request", sconn.RemoteAddr())
}

func rejectChannels(chans <-chan ssh.NewChannel) {
	for nch := range chans {
		_ = nch.Reject(ssh.Prohibited, "agents may not open channels to the proxy")
	}
}

// Handler receives an agent's requests on a tunnel.
type Handler interface {
	// Hello is called once per tunnel, before any heartbeat.
	Hello(Hello) HelloReply
	// Heartbeat is called for every heartbeat; an error is sent back.
	Heartbeat(Heartbeat) error
	// Login is called when the agent reports a session's login.
	Login(Login)
}

// ServerConn is the proxy's end of one agent tunnel.
type ServerConn struct {
	AgentID string
	// Cert is the certificate the agent authenticated with.
	Cert   *ssh.Certificate
	conn   *ssh.ServerConn
	chans  <-chan ssh.NewChannel
	reqs   <-chan *ssh.Request
	logger *slog.Logger
}

// RemoteAddr is the agent's address.
func (c *ServerConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// Serve handles the agent's requests with h, and refuses the channels it
// opens, until the connection closes. It returns the reason the
// connection ended. Both run on the caller's goroutine: a proxy holds
// thousands of tunnels, and each goroutine costs a stack.
func (c *ServerConn) Serve(h Handler) error {
	helloed := false // Handler contract: one Hello, before any Heartbeat
	reqs, chans := c.reqs, c.chans
	for reqs != nil || chans != nil {
		var req *ssh.Request
		select {
		case nch, ok := <-chans:
			if !ok {
				chans = nil
			} else {
				_ = nch.Reject(ssh.Prohibited, "agents may not open channels to the proxy")
			}
			continue
		case r, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			req = r
		}
		switch req.Type {
		case ReqHello:
			var hello Hello
			var reply HelloReply
			if helloed {
				reply.Error = "hello was already received on this tunnel"
			} else if err := decode(req.Payload, &hello); err != nil {
				reply.Error = err.Error()
			} else {
				reply = h.Hello(hello)
			}
			helloed = helloed || reply.Error == ""
			_ = req.Reply(reply.Error == "", encode(reply))
		case ReqHeartbeat:
			if !helloed {
				_ = req.Reply(false, []byte("heartbeat before hello"))
				continue
			}
			var hb Heartbeat
			err := decode(req.Payload, &hb)
			if err == nil {
				err = hb.Validate()
			}
			if err == nil {
				err = h.Heartbeat(hb)
			}
			if err != nil {
				c.logger.Warn("heartbeat refused", "agent", c.AgentID, "err", err)
				_ = req.Reply(false, []byte(err.Error()))
				continue
			}
			_ = req.Reply(true, nil)
		case ReqLogin:
			var l Login
			if err := decode(req.Payload, &l); err == nil {
				h.Login(l)
			}
			if req.WantReply {
				_ = req.Reply(true, nil)
			}
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	return c.conn.Wait()
}

// Dial opens a dial channel to the agent. The agent's rejection reason is
// returned as a *DialError.
func (c *ServerConn) Dial(ctx context.Context, req DialRequest) (ssh.Channel, error) {
	type result struct {
		ch  ssh.Channel
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, reqs, err := c.conn.OpenChannel(ChanDial, encode(req))
		if err == nil {
			go ssh.DiscardRequests(reqs)
		}
		done <- result{ch, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			var oc *ssh.OpenChannelError
			if errors.As(r.err, &oc) {
				return nil, &DialError{Reason: oc.Message}
			}
			return nil, fmt.Errorf("open channel to agent %s: %w", c.AgentID, r.err)
		}
		return r.ch, nil
	case <-ctx.Done():
		go func() {
			// The open may still succeed; close what arrives late.
			if r := <-done; r.ch != nil {
				r.ch.Close()
			}
		}()
		return nil, fmt.Errorf("open channel to agent %s: %w", c.AgentID, ctx.Err())
	}
}

// Keepalive sends one keepalive and waits up to timeout for the reply.
func (c *ServerConn) Keepalive(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		_, _, err := c.conn.SendRequest(ReqKeepalive, true, nil)
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("agent %s: no keepalive reply in %s", c.AgentID, timeout)
	}
}

// SendProxies tells the agent the current proxy set; it does not wait.
func (c *ServerConn) SendProxies(set ProxySet) error {
	_, _, err := c.conn.SendRequest(ReqProxies, false, encode(set))
	return err
}

// SendDefinitions tells the agent the dynamic resource definitions; it
// does not wait.
func (c *ServerConn) SendDefinitions(d Definitions) error {
	_, _, err := c.conn.SendRequest(ReqDefinitions, false, encode(d))
	return err
}

// Close closes the tunnel.
func (c *ServerConn) Close() error { return c.conn.Close() }

// DialError is an agent's refusal of a dial, with its reason.
type DialError struct{ Reason string }

func (e *DialError) Error() string { return e.Reason }
