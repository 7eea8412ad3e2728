// Package tunnel holds the tunnel actor: one per agent tunnel on a proxy.
//
// The actor owns the tunnel's SSH connection. It answers the agent's hello,
// relays the agent's heartbeats to the router, sends keepalives so a
// silently lost agent is caught within KeepaliveInterval×KeepaliveCount,
// opens a channel to the agent when a session sends it a
// [clusterpb.DialRequest] (from this proxy or a peer: one message either
// way), parks the channel in its proxy's rendezvous and answers with the
// token (see actors/forward), passes the agent's login reports to the
// session that dialed, and withdraws the agent's route (TunnelDown) when
// the connection ends.
//
// Messages from the connection's goroutines reach the actor through its
// mailbox, so the router sees TunnelUp, heartbeats and TunnelDown of one
// tunnel in order.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// Conn is the tunnel's connection to its agent (a *revtunnel.ServerConn).
type Conn interface {
	// Serve answers the agent's requests through h until the connection
	// ends.
	Serve(h revtunnel.Handler) error
	Dial(ctx context.Context, req revtunnel.DialRequest) (ssh.Channel, error)
	Keepalive(timeout time.Duration) error
	SendProxies(revtunnel.ProxySet) error
	SendDefinitions(revtunnel.Definitions) error
	SendPolicy(revtunnel.PolicySet) error
	RemoteAddr() net.Addr
	Close() error
}

// Parker keeps a channel until a session claims it by the returned token
// (actors/forward's Rendezvous).
type Parker interface {
	Park(ch ssh.Channel) (token string, err error)
}

// Config configures one tunnel actor.
type Config struct {
	Conn Conn
	// AgentID is the agent's id and HostKey its certificate's key, as the
	// handshake authenticated them.
	AgentID string
	HostKey ssh.PublicKey
	Router  *actor.PID
	ProxyID string
	// Hello answers the agent's hello (renews its certificate, tells it
	// the proxy set).
	Hello func(h revtunnel.Hello) revtunnel.HelloReply
	// Renew, if set, answers the agent's request for a fresh certificate.
	Renew func() revtunnel.RenewReply
	// Grant is what the agent may serve, from its certificate: the router
	// applies only the resources it allows.
	Grant access.Grant
	// KeepaliveInterval and KeepaliveCount: the tunnel is closed after
	// KeepaliveCount keepalives in a row go unanswered for an interval
	// each (the proxy's tunnel.keepalive_* settings).
	KeepaliveInterval time.Duration
	KeepaliveCount    int
	// Rendezvous keeps the channels this tunnel opens until their session
	// claims them; PeerAddr is this proxy's peer address, where a session
	// from another proxy claims them.
	Rendezvous Parker
	PeerAddr   string
	// Audit records the logins agents report for sessions no actor
	// answers for any more.
	Audit Auditor
	// Recordings, if set, stores the recordings the agent uploads;
	// Tickets, if set, signs the recording ticket of every session the
	// tunnel dials (see recording.go).
	Recordings RecordingSink
	Tickets    Tickets
	Clock      func() time.Time
	Logger     *slog.Logger
	// Done, if set, is called once the actor has stopped and every
	// goroutine it started has returned.
	Done func()
}

func (c Config) validate() error {
	switch {
	case c.Conn == nil || c.HostKey == nil || c.AgentID == "":
		return errors.New("tunnel: Conn, AgentID and HostKey are required")
	case c.Router == nil || c.Hello == nil || c.Rendezvous == nil:
		return errors.New("tunnel: Router, Hello and Rendezvous are required")
	case c.KeepaliveInterval <= 0 || c.KeepaliveCount <= 0:
		return fmt.Errorf("tunnel: keepalive interval %s and count %d must be positive", c.KeepaliveInterval, c.KeepaliveCount)
	}
	return nil
}

// Auditor records audit events durably.
type Auditor interface {
	Append(ev audit.Event) (audit.Event, error)
}

// ProxySet tells the agent the cluster's current proxies.
type ProxySet struct{ Set revtunnel.ProxySet }

// Definitions tells the agent the dynamic resource definitions.
type Definitions struct{ Set revtunnel.Definitions }

// Policy tells the agent the cluster's roles.
type Policy struct{ Set revtunnel.PolicySet }

// Close asks the tunnel to close (drain, shutdown).
type Close struct{ Reason string }

type (
	helloMsg     struct{ hello revtunnel.Hello }
	heartbeatMsg struct {
		hb    revtunnel.Heartbeat
		reply chan router.HeartbeatVerdict
	}
	closedMsg struct{ err error }
	loginMsg  struct{ l revtunnel.Login }
	rttMsg    struct{ rtt time.Duration }
	dialedMsg struct {
		session string
		by      *actor.PID
	}
)

// maxSessions bounds the sessions a tunnel actor remembers until their
// login report.
const maxSessions = 4096

// Actor is the tunnel actor.
type Actor struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	agent  model.Agent
	up     bool
	reason string
	self   *actor.PID
	system *actor.ActorSystem

	// sessions maps the sessions this tunnel dialed to the session actor
	// that asked (here or on the entry proxy), so the agent's login report
	// reaches it; bounded, oldest forgotten first. Only the actor's
	// goroutine touches it (dials report back through messages).
	sessions     map[string]*actor.PID
	sessionOrder []string

	kaMu      sync.Mutex  // guards kaTimer and kaStopped
	kaTimer   *time.Timer // runs the next keepalive
	kaStopped bool        // the actor is stopping: no more keepalives
	missed    int         // keepalives unanswered in a row; only keepaliveOnce uses it
}

// NewProps returns props for a tunnel actor, or an error naming what cfg
// lacks.
func NewProps(cfg Config) (*actor.Props, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return actor.PropsFromProducer(func() actor.Actor { return &Actor{cfg: cfg} }), nil
}

// Receive dispatches messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.onStarted(ctx)
	case helloMsg:
		a.onHello(ctx, m)
	case heartbeatMsg:
		a.onHeartbeat(ctx, m)
	case *clusterpb.DialRequest:
		a.onDial(ctx, m)
	case closedMsg:
		a.onClosed(ctx, m)
	case loginMsg:
		a.onLogin(ctx, m)
	case dialedMsg:
		a.remember(m.session, m.by)
	case rttMsg:
		if a.up {
			ctx.Send(a.cfg.Router, &router.TunnelRTT{AgentID: a.agent.ID, Tunnel: ctx.Self(), RTT: m.rtt})
		}
	case *router.Superseded:
		a.reason = "agent connected again"
		a.cfg.Conn.Close()
	case *ProxySet:
		if err := a.cfg.Conn.SendProxies(m.Set); err != nil {
			a.cfg.Logger.Debug("send proxy set", "agent", a.agent.ID, "err", err)
		}
	case *Definitions:
		if err := a.cfg.Conn.SendDefinitions(m.Set); err != nil {
			a.cfg.Logger.Debug("send definitions", "agent", a.agent.ID, "err", err)
		}
	case *Policy:
		if err := a.cfg.Conn.SendPolicy(m.Set); err != nil {
			a.cfg.Logger.Debug("send policy", "agent", a.agent.ID, "err", err)
		}
	case *Close:
		a.reason = m.Reason
		a.cfg.Conn.Close()
	case *actor.Stopping:
		a.onStopping(ctx)
	case *actor.Stopped:
		if a.cfg.Done != nil {
			a.cfg.Done()
		}
	}
}

type handler struct {
	a      *Actor
	self   *actor.PID
	system *actor.ActorSystem
}

func (h handler) Hello(hello revtunnel.Hello) revtunnel.HelloReply {
	reply := h.a.cfg.Hello(hello)
	if reply.Error == "" {
		h.system.Root.Send(h.self, helloMsg{hello})
	}
	return reply
}

func (h handler) Login(l revtunnel.Login) {
	h.system.Root.Send(h.self, loginMsg{l})
}

// heartbeatWait bounds how long an agent's heartbeat waits for the
// router's verdict; past it the agent is told to try again.
const heartbeatWait = 10 * time.Second

// Heartbeat hands the heartbeat to the actor, which hands it to the router
// in order with the tunnel's other messages, and waits for the verdict.
func (h handler) Heartbeat(hb revtunnel.Heartbeat) (revtunnel.HeartbeatReply, error) {
	reply := make(chan router.HeartbeatVerdict, 1)
	h.system.Root.Send(h.self, heartbeatMsg{hb: hb, reply: reply})
	t := time.NewTimer(heartbeatWait)
	defer t.Stop()
	select {
	case v := <-reply:
		var out revtunnel.HeartbeatReply
		for _, r := range v.Refused {
			out.Refused = append(out.Refused, revtunnel.Refused{Name: r.Name, Reason: r.Reason})
		}
		return out, nil
	case <-t.C:
		return revtunnel.HeartbeatReply{}, errors.New("the proxy is busy; heartbeat again")
	}
}

func (h handler) Renew() revtunnel.RenewReply {
	if h.a.cfg.Renew == nil {
		return revtunnel.RenewReply{Error: "this proxy does not renew certificates"}
	}
	return h.a.cfg.Renew()
}

func (a *Actor) onStarted(ctx actor.Context) {
	a.ctx, a.cancel = context.WithCancel(context.Background())
	self, system := ctx.Self(), ctx.ActorSystem()
	a.self, a.system = self, system
	a.agent = model.Agent{
		ID:        a.cfg.AgentID,
		ProxyID:   a.cfg.ProxyID,
		Addr:      a.cfg.Conn.RemoteAddr().String(),
		HostKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(a.cfg.HostKey))),
		Connected: a.cfg.Clock(),
		LastSeen:  a.cfg.Clock(),
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		err := a.cfg.Conn.Serve(handler{a: a, self: self, system: system})
		system.Root.Send(self, closedMsg{err})
	}()
	a.kaMu.Lock()
	a.kaTimer = time.AfterFunc(a.cfg.KeepaliveInterval, a.keepaliveOnce)
	a.kaMu.Unlock()
}

// keepaliveOnce sends one keepalive, from a timer rather than a goroutine
// of the tunnel's own (a proxy holds thousands of tunnels, and an idle
// goroutine costs a stack), and arms the timer for the next, one interval
// after this one was sent. It closes the connection after KeepaliveCount
// missed replies.
func (a *Actor) keepaliveOnce() {
	a.kaMu.Lock()
	if a.kaStopped {
		a.kaMu.Unlock()
		return
	}
	// onStopping waits for a.wg only after setting kaStopped, so this Add
	// never races its Wait.
	a.wg.Add(1)
	a.kaMu.Unlock()
	defer a.wg.Done()

	sent := time.Now()
	if err := a.cfg.Conn.Keepalive(a.cfg.KeepaliveInterval); err != nil {
		a.missed++
		if a.missed >= a.cfg.KeepaliveCount {
			a.cfg.Logger.Warn("agent stopped answering keepalives; closing tunnel", "agent", a.agent.ID, "missed", a.missed)
			a.cfg.Conn.Close()
			return
		}
	} else {
		a.missed = 0
		a.system.Root.Send(a.self, rttMsg{time.Since(sent)})
	}
	a.kaMu.Lock()
	defer a.kaMu.Unlock()
	if !a.kaStopped {
		a.kaTimer.Reset(max(0, a.cfg.KeepaliveInterval-time.Since(sent)))
	}
}

func (a *Actor) onHello(ctx actor.Context, m helloMsg) {
	a.agent.Hostname = printable(m.hello.Hostname, 255)
	a.agent.Version = printable(m.hello.Version, 64)
	if keys := hostKeys(m.hello.HostKeys); keys != "" {
		a.agent.HostKey = keys
	}
	a.up = true
	ctx.Send(a.cfg.Router, &router.TunnelUp{Agent: a.agent, Tunnel: ctx.Self()})
	// A keepalive now, after the route is up: its round trip (the agent
	// leg of the sessions through this tunnel) reaches the router, and the
	// routes, before most first sessions do. Only if the first one is
	// still pending: one running arms the next itself.
	a.kaMu.Lock()
	if !a.kaStopped && a.kaTimer != nil && a.kaTimer.Stop() {
		a.kaTimer.Reset(0)
	}
	a.kaMu.Unlock()
}

func (a *Actor) onHeartbeat(ctx actor.Context, m heartbeatMsg) {
	if !a.up {
		m.reply <- router.HeartbeatVerdict{} // the hello comes first; the agent resends heartbeats
		return
	}
	ctx.Send(a.cfg.Router, &router.Heartbeat{AgentID: a.agent.ID, Tunnel: ctx.Self(), Grant: a.cfg.Grant, Resources: m.hb.Resources, Reply: m.reply})
}

// printable keeps an agent's word (its host name, its version) for status
// and logs only if it is short printable text; otherwise it is dropped.
func printable(s string, max int) string {
	if len(s) > max || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return ""
	}
	return s
}

// hostKeys checks the plain host keys an agent says its SSH server offers
// and renders them one per line; at most four, each a real public key and
// not a certificate. Anything else is ignored.
func hostKeys(lines []string) string {
	var out []string
	for _, l := range lines {
		if len(out) == 4 || len(l) > 1024 {
			break
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l))
		if err != nil {
			continue
		}
		if _, isCert := pub.(*ssh.Certificate); isCert {
			continue
		}
		out = append(out, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
	}
	return strings.Join(out, "\n")
}

// remember records which actor a dialed session belongs to.
func (a *Actor) remember(session string, by *actor.PID) {
	if a.sessions == nil {
		a.sessions = map[string]*actor.PID{}
	}
	if len(a.sessionOrder) >= maxSessions {
		delete(a.sessions, a.sessionOrder[0])
		a.sessionOrder = a.sessionOrder[1:]
	}
	a.sessions[session] = by
	a.sessionOrder = append(a.sessionOrder, session)
}

// onLogin passes the login a session's user took (or why the node refused
// it) to the session's actor, which audits it with the session's user and
// resource. A report for a session that actor no longer answers for is
// recorded here as the agent's word.
func (a *Actor) onLogin(ctx actor.Context, m loginMsg) {
	report := &clusterpb.LoginReport{SessionId: m.l.SessionID, Login: m.l.Login, KeyId: m.l.KeyID, Refused: m.l.Refused}
	if pid := a.sessions[m.l.SessionID]; pid != nil {
		delete(a.sessions, m.l.SessionID)
		ctx.Send(pid, report)
		return
	}
	if a.cfg.Audit == nil {
		return
	}
	ev := audit.Event{
		Time: a.cfg.Clock(), Type: "session.login", SessionID: m.l.SessionID, Login: m.l.Login,
		AgentID: a.agent.ID, ProxyID: a.cfg.ProxyID, Outcome: "ok",
	}
	if m.l.Refused != "" {
		ev.Outcome, ev.Error = "refused", m.l.Refused
	}
	if _, err := a.cfg.Audit.Append(ev); err != nil {
		a.cfg.Logger.Error("audit login", "session", m.l.SessionID, "err", err)
	}
}

// onDial opens a channel to the agent for a session (entered through this
// proxy or another), parks it and answers with the token. The dial runs
// off the actor's goroutine, bounded by the request's timeout.
func (a *Actor) onDial(ctx actor.Context, m *clusterpb.DialRequest) {
	sender, system, self := ctx.Sender(), ctx.ActorSystem(), ctx.Self()
	if sender == nil {
		return
	}
	timeout := time.Duration(m.TimeoutMs) * time.Millisecond
	if timeout <= 0 || timeout > maxDialTimeout {
		timeout = maxDialTimeout
	}
	var replyTo *actor.PID
	if m.ReplyToId != "" {
		replyTo = actor.NewPID(m.ReplyToAddress, m.ReplyToId)
	}
	req := revtunnel.DialRequest{SessionID: m.SessionId, Resource: m.Resource, Port: m.Port, User: m.User, ClientAddr: m.ClientAddr, Resume: m.Resume}
	req.Ticket = a.ticket(req)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		dctx, cancel := context.WithTimeout(a.ctx, timeout)
		defer cancel()
		resp := &clusterpb.DialResponse{AgentId: a.agent.ID, PeerAddr: a.cfg.PeerAddr}
		ch, err := a.cfg.Conn.Dial(dctx, req)
		var de *revtunnel.DialError
		switch {
		case errors.As(err, &de):
			resp.Error, resp.Refused = de.Reason, true
		case err != nil:
			resp.Error = fmt.Sprintf("agent %s unreachable: %v", a.agent.ID, err)
		default:
			token, err := a.cfg.Rendezvous.Park(ch)
			if err != nil {
				resp.Error = err.Error()
				break
			}
			resp.Ok, resp.Token = true, token
			if replyTo != nil {
				system.Root.Send(self, dialedMsg{req.SessionID, replyTo})
			}
		}
		system.Root.Send(sender, resp)
	}()
}

// maxDialTimeout bounds a dial whose request names no timeout (or one too
// long).
const maxDialTimeout = 5 * time.Minute

func (a *Actor) onClosed(ctx actor.Context, m closedMsg) {
	reason := a.reason
	if reason == "" && m.err != nil {
		reason = m.err.Error()
	}
	if reason == "" {
		reason = "tunnel closed"
	}
	if a.up {
		ctx.Send(a.cfg.Router, &router.TunnelDown{AgentID: a.agent.ID, Tunnel: ctx.Self(), Reason: reason})
	}
	a.cfg.Logger.Info("tunnel closed", "agent", a.agent.ID, "reason", reason)
	ctx.Stop(ctx.Self())
}

func (a *Actor) onStopping(ctx actor.Context) {
	a.kaMu.Lock()
	a.kaStopped = true
	if a.kaTimer != nil {
		a.kaTimer.Stop()
	}
	a.kaMu.Unlock()
	a.cancel()
	a.cfg.Conn.Close()
	a.wg.Wait()
}
