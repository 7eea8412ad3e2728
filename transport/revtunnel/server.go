package revtunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/gate"
	"github.com/warren-proxy/warren/internal/logsample"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/ratelimit"
	"github.com/warren-proxy/warren/transport/pki"
)

// ErrJoined is returned by Server.Handshake for a join connection: the
// join was served and the connection closed; there is no tunnel.
var ErrJoined = errors.New("join served")

// ServerConfig configures the proxy side of the tunnel protocol.
type ServerConfig struct {
	// HostSigner is the proxy's host key, wrapping a host certificate from
	// the cluster's proxy host CA.
	HostSigner ssh.Signer
	// AgentCA signs agents' certificates; only agents holding one connect.
	AgentCA ssh.PublicKey
	// AuthorizeAgent, if set, is asked about an agent whose certificate
	// is valid (signed by AgentCA, for its id, in time): a lock or a bad
	// grant refuses the tunnel with the error, which is logged.
	AuthorizeAgent func(cert *ssh.Certificate) error
	// CheckJoinToken reports whether a join token is one the cluster
	// knows. Whether it may still be used (expiry, uses, locks) is Join's
	// to say, so that the agent hears why.
	CheckJoinToken func(token string) bool
	// Join issues the identity of a joining agent that authenticated with
	// token.
	Join func(req JoinRequest, token string, remote net.Addr) (JoinResponse, error)
	// HandshakeTimeout bounds the SSH handshake and the join exchange.
	HandshakeTimeout time.Duration
	// JoinBurst wrong join tokens are allowed from one address at once,
	// and one more every JoinInterval (defaults 10 and 6s: ten a minute).
	JoinBurst    int
	JoinInterval time.Duration
	Clock        func() time.Time
	Logger       *slog.Logger
}

// Validate reports every missing field at once.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.HostSigner == nil {
		errs = append(errs, errors.New("HostSigner is required"))
	}
	if c.AgentCA == nil {
		errs = append(errs, errors.New("AgentCA is required"))
	}
	if c.CheckJoinToken == nil {
		errs = append(errs, errors.New("CheckJoinToken is required"))
	}
	if c.Join == nil {
		errs = append(errs, errors.New("Join is required"))
	}
	if c.JoinBurst < 0 || c.JoinInterval < 0 {
		errs = append(errs, errors.New("JoinBurst and JoinInterval must not be negative"))
	}
	return errors.Join(errs...)
}

// Server accepts agent tunnels.
type Server struct {
	cfg          ServerConfig
	ssh          *ssh.ServerConfig
	joins        *ratelimit.Keyed
	refusedJoins *logsample.Sampler
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel server config: %w", err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.JoinBurst == 0 {
		cfg.JoinBurst = 10
	}
	if cfg.JoinInterval == 0 {
		cfg.JoinInterval = 6 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:          cfg,
		joins:        &ratelimit.Keyed{Burst: cfg.JoinBurst, Every: cfg.JoinInterval, MaxKeys: 100000},
		refusedJoins: logsample.New(cfg.Logger, "join refused: unknown token", logsample.Every),
	}
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

type joinTokenKey struct{}

// checkJoin authenticates a join connection by its token. Wrong tokens
// are limited per address (JoinBurst at once, one more every
// JoinInterval): a token has 128 bits, but nobody gets to try thousands a
// second. Right ones cost nothing, so a fleet behind one NAT address can
// join at once.
func (s *Server) checkJoin(meta ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
	if meta.User() != JoinUser {
		return nil, fmt.Errorf("password auth is only for user %q", JoinUser)
	}
	ip := gate.AddrKey(meta.RemoteAddr())
	if !s.joins.Has(ip) {
		s.refusedJoins.Event("remote", meta.RemoteAddr().String(), "reason", "too many wrong tokens")
		return nil, errors.New("too many wrong join tokens from this address; wait a minute")
	}
	if !s.cfg.CheckJoinToken(string(password)) {
		s.joins.Allow(ip) // charge the failure
		s.refusedJoins.Event("remote", meta.RemoteAddr().String())
		return nil, errors.New("invalid join token")
	}
	return &ssh.Permissions{ExtraData: map[any]any{joinTokenKey{}: string(password)}}, nil
}

func (s *Server) checkAgent(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	cert, err := pki.CheckAgentCert(s.cfg.AgentCA, key, meta.User(), s.cfg.Clock())
	if err == nil && s.cfg.AuthorizeAgent != nil {
		err = s.cfg.AuthorizeAgent(cert)
	}
	if err != nil {
		s.cfg.Logger.Warn("tunnel refused", "remote", meta.RemoteAddr().String(), "agent", model.Quote(meta.User()), "err", err)
		return nil, err
	}
	return &ssh.Permissions{ExtraData: map[any]any{certKey{}: cert}}, nil
}

type certKey struct{}

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
	if tok, ok := sconn.Permissions.ExtraData[joinTokenKey{}].(string); ok {
		defer sconn.Close()
		go rejectChannels(chans)
		return nil, s.serveJoin(sconn, tok, reqs)
	}
	_ = nc.SetDeadline(time.Time{})
	cert, _ := sconn.Permissions.ExtraData[certKey{}].(*ssh.Certificate)
	return &ServerConn{AgentID: sconn.User(), Cert: cert, conn: sconn, chans: chans, reqs: reqs, logger: s.cfg.Logger, dialed: map[string]bool{}}, nil
}

func (s *Server) serveJoin(sconn *ssh.ServerConn, token string, reqs <-chan *ssh.Request) error {
	for req := range reqs {
		if req.Type != ReqJoin {
			_ = req.Reply(false, nil)
			continue
		}
		var jr JoinRequest
		var resp JoinResponse
		if err := decode(req.Payload, &jr); err != nil {
			resp.Error = "malformed join request: " + err.Error()
		} else if r, err := s.cfg.Join(jr, token, sconn.RemoteAddr()); err != nil {
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
	// Hello is called once per tunnel, before anything else.
	Hello(Hello) HelloReply
	// Heartbeat is called for every valid heartbeat after the hello; an
	// error refuses it, a reply lists the resources refused.
	Heartbeat(Heartbeat) (HeartbeatReply, error)
	// Login is called when the agent reports a session's login: after the
	// hello, only for a session this tunnel dialed, once per session, with
	// a valid payload. Anything else is dropped before it gets here.
	Login(Login)
	// Renew answers the agent's request for a fresh certificate.
	Renew() RenewReply
}

// maxPendingLogins bounds the sessions a tunnel remembers having dialed
// until their login report: one agent cannot make the proxy remember more.
const maxPendingLogins = 4096

// ServerConn is the proxy's end of one agent tunnel.
type ServerConn struct {
	AgentID string
	// Cert is the certificate the agent authenticated with.
	Cert   *ssh.Certificate
	conn   *ssh.ServerConn
	chans  <-chan ssh.NewChannel
	reqs   <-chan *ssh.Request
	logger *slog.Logger

	mu      sync.Mutex      // guards dialed and order
	dialed  map[string]bool // sessions dialed whose login is not reported yet
	order   []string        // dialed, oldest first, to forget beyond maxPendingLogins
	dropped int             // login reports dropped, for one log line per tunnel

	uploads  atomic.Int32   // recording uploads running (recording.go)
	uploadWG sync.WaitGroup // their goroutines, waited for by Serve
}

// expectLogin remembers that session was dialed on this tunnel.
func (c *ServerConn) expectLogin(session string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.order) >= maxPendingLogins {
		delete(c.dialed, c.order[0])
		c.order = c.order[1:]
	}
	c.dialed[session] = true
	c.order = append(c.order, session)
}

// takeLogin reports whether a login report for session is expected, and
// forgets it: one report per session.
func (c *ServerConn) takeLogin(session string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dialed[session] {
		return false
	}
	delete(c.dialed, session)
	if i := slices.Index(c.order, session); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
	return true
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
			switch rh, isRH := h.(RecordingHandler); {
			case !ok:
				chans = nil
			case nch.ChannelType() == ChanRecording && isRH && helloed:
				c.serveRecording(nch, rh)
			default:
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
			var reply HeartbeatReply
			err := decode(req.Payload, &hb)
			if err == nil {
				err = hb.Validate()
			}
			if err == nil {
				reply, err = h.Heartbeat(hb)
			}
			if err != nil {
				c.logger.Warn("heartbeat refused", "agent", c.AgentID, "err", err)
				_ = req.Reply(false, []byte(err.Error()))
				continue
			}
			_ = req.Reply(true, encode(reply))
		case ReqLogin:
			var l Login
			switch {
			case !helloed || len(req.Payload) > MaxLoginPayload:
				c.dropLogin()
			case decode(req.Payload, &l) != nil || l.Validate() != nil || !c.takeLogin(l.SessionID):
				c.dropLogin()
			default:
				h.Login(l)
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		case ReqRenew:
			reply := RenewReply{Error: "renew before hello"}
			if helloed {
				reply = h.Renew()
			}
			_ = req.Reply(reply.Error == "", encode(reply))
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	c.uploadWG.Wait()
	if c.dropped > 0 {
		c.logger.Warn("agent sent login reports for sessions it was not dialed for; dropped", "agent", c.AgentID, "count", c.dropped)
	}
	return c.conn.Wait()
}

// dropLogin counts a login report that is not accepted. Nothing is logged
// per report: an agent could send them by the thousand.
func (c *ServerConn) dropLogin() {
	c.mu.Lock()
	c.dropped++
	c.mu.Unlock()
}

// Dial opens a dial channel to the agent. The agent's rejection reason is
// returned as a *DialError.
func (c *ServerConn) Dial(ctx context.Context, req DialRequest) (ssh.Channel, error) {
	type result struct {
		ch  ssh.Channel
		err error
	}
	done := make(chan result, 1)
	// Expected before the channel opens: the agent may report the login
	// the moment it accepts.
	c.expectLogin(req.SessionID)
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

// SendPolicy tells the agent the cluster's roles; it does not wait.
func (c *ServerConn) SendPolicy(set PolicySet) error {
	_, _, err := c.conn.SendRequest(ReqPolicy, false, encode(set))
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
