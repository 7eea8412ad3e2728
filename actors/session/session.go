// Package session holds the session: one per user session, that is one
// user channel to one resource, from the user's request to its audited end.
//
// # One session, end to end
//
// A user runs `ssh -J proxy node1` (or `ssh -W`, `-L`, ProxyJump). Across
// packages, its bytes and its decisions take this path:
//
//  1. transport/usersh authenticates the user's certificate on the entry
//     proxy and hands the direct-tcpip channel request to the proxy's user
//     handler (actors/proxy), which spawns a session actor ([NewProps]) and
//     leaves the rest to it.
//  2. Resolve: the resource name is looked up in the router's snapshot
//     (actors/router): every endpoint, that is every agent serving the name
//     through every proxy that holds one of its tunnels.
//  3. Authorize: the user's roles (cluster/access) decide per endpoint, since
//     agents serving one name may label it differently. A denial is audited
//     as session.denied and nothing is dialed.
//  4. Order candidates: usable endpoints only (online, healthy), by the
//     proxy's strategy, the user connection's sticky agent first, agents that
//     just failed last ([orderCandidates]).
//  5. Dial, one candidate at a time, each attempt under its own context
//     (session.attempt_timeout) and all of them under session.dial_timeout.
//     The [Dialer] for a tunnel on this proxy and the one for a tunnel on a
//     peer (actors/forward) both send one [clusterpb.DialRequest] to the
//     tunnel actor (actors/tunnel); it opens a channel to its agent over the
//     reverse tunnel (transport/revtunnel), whose agent (actors/agent)
//     connects to the resource: its embedded SSH server (transport/nodessh)
//     or a TCP address. The tunnel parks the channel under a token; the
//     local dialer claims it in place, the peer dialer opens a data stream
//     to the peer (transport/peer) whose forwarding server claims it. A
//     failed attempt moves on to the next candidate, so the user sees a
//     failure only when no agent can serve the name.
//  6. Audit: session.start is written durably (storage/audit) before the
//     user's channel is accepted; a proxy that cannot write its audit log
//     refuses the session.
//  7. Pipe: bytes flow both ways (transport/streams), with half-close,
//     until either side ends. The session stays on its agent. Its stream
//     to the agent is resumable (transport/resume, unless
//     session.resume_off): when a hop on the way breaks, [Session.redial]
//     dials the same agent through whichever proxies hold its tunnels then,
//     and the bytes go on from where each end is; the session ends only
//     when no path comes back within session.resume_timeout, or the agent
//     is gone (no tunnel for 10 s, or it does not hold the session).
//  8. End: for an ssh resource the node reports the login it let the user
//     take, or why it refused it, through the tunnel actor to this session
//     (session.login); then session.end records the bytes, the duration and
//     the outcome (ok, error, or refused by the node).
//
// The session's flow is [Session.Run], plain code that reads in that order;
// the actor around it ([Actor]) gives it a mailbox for the node's login
// reports and a lifecycle.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/forward"
	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/resume"
	"github.com/warren-proxy/warren/transport/revtunnel"
	"github.com/warren-proxy/warren/transport/streams"
)

// Dialer opens the session's stream to the agent behind one endpoint: a
// tunnel on this proxy or on a peer (actors/forward's Local and Peer).
// It returns within ctx, and fails at once when it learns the endpoint is
// gone.
type Dialer interface {
	Dial(ctx context.Context, e router.Endpoint, req *clusterpb.DialRequest) (streams.Stream, error)
}

// Sticky remembers which agent a user connection uses for a resource.
type Sticky interface {
	StickyAgent(resource string) string
	SetStickyAgent(resource, agentID string)
}

// Auditor records audit events durably.
type Auditor interface {
	Append(ev audit.Event) (audit.Event, error)
}

// Config configures one session.
type Config struct {
	ID      string
	ProxyID string
	User    string
	// Identity is the user as their certificate says: the session reaches
	// only agents whose resource the user's roles allow.
	Identity   access.Identity
	ClientAddr string
	// Resource and Port are what the user asked for.
	Resource string
	Port     uint32
	// Channel is the user's channel; the session owns it.
	Channel ssh.NewChannel
	Table   *router.Table
	Audit   Auditor
	// Local dials tunnels on this proxy, Peer tunnels on other proxies.
	Local, Peer Dialer
	// Strategy picks among healthy agents (see the Strategy constants);
	// Region is this proxy's region; Load counts live sessions per agent.
	Strategy string
	Region   string
	Load     Load
	// Live, if set, holds the session while it runs.
	Live *Live
	// UserConn, if set, ends when the user's SSH connection does; the
	// session ends with it.
	UserConn context.Context
	// Sticky, if set, keeps every session of one user connection to one
	// resource on one agent.
	Sticky Sticky
	// DialTimeout bounds the whole connect phase, over every candidate;
	// AttemptTimeout bounds one candidate (the proxy's session.* settings).
	DialTimeout    time.Duration
	AttemptTimeout time.Duration
	// Resume, if positive, makes the session resumable (transport/resume):
	// when a hop between this proxy and the agent breaks, the session
	// dials the same agent again through any path, and waits at most
	// Resume for one before it ends. ResumeWindow is its window each way
	// (resume.DefaultWindow if zero).
	Resume       time.Duration
	ResumeWindow int
	// ListHint is appended to "unknown resource" refusals: how the user
	// lists resources.
	ListHint string
	// Observer, if set, is told what the session does (the proxy's
	// metrics); UserRTT, if set, is the user connection's last measured
	// round trip.
	Observer Observer
	UserRTT  func() time.Duration
	// Clock, if set, stamps audit events (default time.Now).
	Clock  func() time.Time
	Logger *slog.Logger
	// Done is called once the session has ended and its goroutines have
	// returned.
	Done func()
}

func (c Config) validate() error {
	switch {
	case c.Channel == nil || c.Table == nil || c.Audit == nil:
		return errors.New("session: Channel, Table and Audit are required")
	case c.Local == nil || c.Peer == nil:
		return errors.New("session: Local and Peer dialers are required")
	case c.DialTimeout <= 0 || c.AttemptTimeout <= 0:
		return fmt.Errorf("session: dial timeout %s and attempt timeout %s must be positive", c.DialTimeout, c.AttemptTimeout)
	}
	return nil
}

// loginReportWait is how long a session to an ssh resource whose pipe ended
// waits for the node's login report before it records its end: the report
// and the channel's close travel apart.
const loginReportWait = time.Second

// Session is one user session. Run carries it; Report hands it the node's
// login reports, from any goroutine.
type Session struct {
	cfg     Config
	reports chan *clusterpb.LoginReport
	// replyTo is the session actor, where tunnels send login reports.
	replyTo *actor.PID

	started time.Time
	// Set once connected: the agent, its resource's kind, and the proxy
	// path when the session crosses a peer.
	agentID, kind, path string
	// login is the login the user took on the node, or refused why the
	// node refused it.
	login, refused string
	// resumedPath is the path of the newest hop of a resumable session.
	resumedPath atomic.Pointer[string]
	// resumable is the session's stream to its agent, once connected, if
	// it is resumable.
	resumable atomic.Pointer[resume.Client]
	// stop ends the session (Run sets it).
	stop context.CancelCauseFunc
	// noRoute is when a redial first found no tunnel of the agent on any
	// proxy (zero while one is found); redial runs on one goroutine.
	noRoute time.Time
	// connectTook is how long connect took, legs the path's round trips
	// then: for the end's log line.
	connectTook time.Duration
	legs        Legs
	// shown is what the status page reads while the session runs.
	shown shown
}

// noRouteGiveUp is how long a session waits for its agent to have a
// tunnel on any proxy again: an agent whose proxy died re-homes within
// seconds (its other tunnel needs none), one that stopped never does.
const noRouteGiveUp = 10 * time.Second

// note sends text to the session's user, if the session can: see
// Live.Tell.
func (s *Session) note(text string) bool {
	rc := s.resumable.Load()
	if rc == nil || s.kind != "ssh" {
		return false
	}
	rc.Note(text)
	return true
}

// New returns a session for cfg, or an error naming what cfg lacks.
func New(cfg Config) (*Session, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Session{cfg: cfg, reports: make(chan *clusterpb.LoginReport, 4)}, nil
}

// Report hands the session a login report from its node. It never blocks;
// reports beyond a handful are dropped (a session has one login).
func (s *Session) Report(r *clusterpb.LoginReport) {
	if r.SessionId != s.cfg.ID {
		return
	}
	select {
	case s.reports <- r:
	default:
	}
}

// Run carries the session from the user's request to its end, and returns
// when it has ended: the user's channel is rejected or closed, and every
// outcome is in the audit log. Cancelling ctx ends the session.
func (s *Session) Run(ctx context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.stop = cancel
	s.started = s.cfg.Clock()
	snap := s.cfg.Table.Snapshot()

	obs := s.cfg.Observer
	endpoints := snap.Lookup(s.cfg.Resource)
	if len(endpoints) == 0 {
		obs.Started(StartUnavailable)
		s.refuse(fmt.Sprintf("unknown resource %q%s", s.cfg.Resource, s.cfg.ListHint))
		return
	}

	allowed, denial := authorize(snap.Policy, s.cfg.Identity, endpoints)
	obs.Decided(len(allowed) > 0)
	if len(allowed) == 0 {
		obs.Started(StartDenied)
		s.deny(denial)
		return
	}

	candidates := s.candidates(allowed)
	if len(candidates) == 0 {
		obs.Started(StartUnavailable)
		s.refuse(unusableReason(s.cfg.Resource, allowed, s.started))
		return
	}

	agent, err := s.connect(ctx, candidates)
	if err != nil {
		obs.Started(StartUnavailable)
		s.refuse(fmt.Sprintf("cannot connect to %q: %v", s.cfg.Resource, err))
		return
	}
	if rc, ok := agent.(*resume.Client); ok {
		s.resumable.Store(rc)
	}
	if s.cfg.Live != nil {
		s.cfg.Live.add(s)
		defer s.cfg.Live.remove(s)
	}
	if s.cfg.Load != nil {
		defer s.cfg.Load.Add(s.agentID, -1)
	}

	// The start is durable before the user's channel is accepted: no
	// session runs that the audit log does not know of.
	if _, err := s.cfg.Audit.Append(s.event("session.start", "started", "")); err != nil {
		agent.Close()
		obs.Started(StartError)
		s.cfg.Logger.Error("audit log write failed; refusing session", "session", s.cfg.ID, "err", err)
		s.reject("the proxy cannot write its audit log; try another proxy")
		return
	}
	user, reqs, err := s.cfg.Channel.Accept()
	if err != nil {
		agent.Close()
		obs.Started(StartError)
		s.end(streams.Result{Err: fmt.Errorf("accept user channel: %w", err)})
		return
	}
	obs.Started(StartOK)
	go ssh.DiscardRequests(reqs)
	s.cfg.Logger.Info("session started", "session", s.cfg.ID, "user", s.cfg.User, "resource", s.cfg.Resource, "agent", s.agentID, "path", s.pathString())

	s.end(s.pipe(ctx, user, counted{agent, obs}))
}

// authorize keeps the endpoints the user's roles let them reach, and says
// why when there is none.
func authorize(pol *access.Policy, id access.Identity, eps []router.Endpoint) (allowed []router.Endpoint, denial string) {
	for _, e := range eps {
		d := pol.Reach(id, Target(e))
		if d.Allowed {
			allowed = append(allowed, e)
		} else if denial == "" {
			denial = d.Reason
		}
	}
	return allowed, denial
}

// Target describes an endpoint's resource for an access decision.
func Target(e router.Endpoint) access.Target {
	return access.Target{Name: e.Name, Kind: e.Kind, Labels: e.Labels, Port: e.Port}
}

// candidates orders the usable endpoints for this session.
func (s *Session) candidates(allowed []router.Endpoint) []router.Endpoint {
	var usable []router.Endpoint
	for _, e := range allowed {
		if e.Usable() {
			usable = append(usable, e)
		}
	}
	if len(usable) == 0 {
		return nil
	}
	usable = orderCandidates(usable, s.cfg.Strategy, s.cfg.Region, s.cfg.Load)
	if s.cfg.Sticky != nil {
		if agentID := s.cfg.Sticky.StickyAgent(s.cfg.Resource); agentID != "" {
			preferAgent(usable, agentID)
		}
	}
	return usable
}

// connect tries the candidates in order until one gives a stream to its
// agent, each attempt under its own deadline and all within DialTimeout.
func (s *Session) connect(ctx context.Context, candidates []router.Endpoint) (streams.Stream, error) {
	deadline := time.Now().Add(s.cfg.DialTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var last error
	var lastFailed router.Endpoint
	for _, e := range candidates {
		// The deadline, not only ctx: an attempt cut short by it may
		// return before ctx's own timer has fired.
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
		if last != nil {
			s.cfg.Observer.FailedOver(pathKind(e))
		}
		st, err := s.attempt(ctx, e)
		s.cfg.Observer.Dialed(pathKind(e), err)
		if err == nil {
			s.connected(e)
			s.failedOver(lastFailed, e, last)
			return st, nil
		}
		s.cfg.Logger.Info("dial failed; trying next agent", "session", s.cfg.ID, "resource", s.cfg.Resource, "agent", e.AgentID, "proxy", e.ProxyID, "err", err)
		if s.cfg.Load != nil {
			s.cfg.Load.Failed(e.AgentID)
		}
		last, lastFailed = err, e
	}
	if last == nil {
		last = context.Cause(ctx)
	}
	return nil, last
}

// attempt dials one candidate under its own deadline.
func (s *Session) attempt(ctx context.Context, e router.Endpoint) (streams.Stream, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	dialer := s.cfg.Peer
	if e.Local {
		dialer = s.cfg.Local
	}
	mode := ""
	if s.cfg.Resume > 0 {
		mode = revtunnel.ResumeStart
	}
	st, err := dialer.Dial(actx, e, s.request(mode))
	if err == nil && mode != "" {
		var rc *resume.Client
		if rc, err = resume.Start(actx, st, s.resumeConfig(e)); err != nil {
			st.Close()
		} else {
			return rc, nil
		}
	}
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && time.Now().Before(ctxDeadline(ctx)):
		return nil, fmt.Errorf("agent %s via proxy %s did not answer in time", e.AgentID, e.ProxyID)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("agent %s via proxy %s did not answer in time, and session.dial_timeout (%s) is over", e.AgentID, e.ProxyID, s.cfg.DialTimeout)
	}
	return nil, fmt.Errorf("agent %s via proxy %s: %w", e.AgentID, e.ProxyID, err)
}

// ctxDeadline is ctx's deadline, or the far future.
func ctxDeadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Hour)
}

// request is what the session asks of a tunnel; resume is the hop's
// revtunnel.Resume* mode, or empty for a plain stream.
func (s *Session) request(resume string) *clusterpb.DialRequest {
	req := &clusterpb.DialRequest{
		SessionId:  s.cfg.ID,
		Resource:   s.cfg.Resource,
		Port:       s.cfg.Port,
		User:       s.cfg.User,
		ClientAddr: s.cfg.ClientAddr,
		EntryProxy: s.cfg.ProxyID,
		Resume:     resume,
	}
	if s.replyTo != nil {
		req.ReplyToAddress, req.ReplyToId = s.replyTo.Address, s.replyTo.Id
	}
	return req
}

// resumeConfig makes a session to the agent behind e resumable: a broken
// hop is replaced by a new one to the same agent, through whichever proxy
// holds one of its tunnels then.
func (s *Session) resumeConfig(e router.Endpoint) resume.ClientConfig {
	agentID := e.AgentID
	return resume.ClientConfig{
		SessionID: s.cfg.ID,
		AgentID:   agentID,
		Window:    s.cfg.ResumeWindow,
		Detach:    s.cfg.Resume,
		Redial:    func(ctx context.Context) (streams.Stream, error) { return s.redial(ctx, agentID) },
		Detached: func(err error) {
			s.pathLost(err)
			s.cfg.Logger.Warn("session lost its path to the agent; looking for another", "session", s.cfg.ID, "resource", s.cfg.Resource, "agent", agentID, "err", err, "wait", s.cfg.Resume.String())
		},
		Resumed: func(stalled time.Duration, hops int) {
			path := s.cfg.ProxyID + ">" + agentID
			if p := s.resumedPath.Load(); p != nil {
				path = *p
			}
			s.cfg.Observer.Resumed(stalled)
			s.resumedOver(e, path, stalled)
			s.cfg.Logger.Info("session resumed", "session", s.cfg.ID, "resource", s.cfg.Resource, "agent", agentID, "path", path, "stalled", stalled.Round(time.Millisecond), "hops", hops)
			ev := s.event("session.resumed", "ok", "")
			ev.AgentID, ev.Path, ev.Duration = agentID, path, stalled
			if _, err := s.cfg.Audit.Append(ev); err != nil {
				s.cfg.Logger.Error("audit resume", "session", s.cfg.ID, "err", err)
			}
		},
	}
}

// redial opens a new hop to the agent that serves this session, through
// the first of its tunnels that answers: this proxy's, then its peers'.
func (s *Session) redial(ctx context.Context, agentID string) (streams.Stream, error) {
	var hops []router.Endpoint
	for _, e := range s.cfg.Table.Snapshot().Lookup(s.cfg.Resource) {
		if e.AgentID == agentID && e.Online && e.Tunnel != nil {
			hops = append(hops, e)
		}
	}
	sort.SliceStable(hops, func(i, j int) bool { return hops[i].Local && !hops[j].Local })
	if len(hops) == 0 {
		if s.noRoute.IsZero() {
			s.noRoute = time.Now()
		} else if time.Since(s.noRoute) > noRouteGiveUp {
			return nil, fmt.Errorf("%w: agent %s has had no tunnel on any proxy for %s (it stopped, or lost its network)", resume.ErrGone, agentID, noRouteGiveUp)
		}
	} else {
		s.noRoute = time.Time{}
	}
	if len(hops) == 0 {
		return nil, fmt.Errorf("no proxy holds a tunnel of agent %s now", agentID)
	}
	return s.race(ctx, agentID, hops)
}

// redialStagger is how long a redial waits on one path before it tries the
// next one too: the route through a proxy that just died may still be
// listed, and a dial through it can take an attempt's whole timeout.
const redialStagger = 250 * time.Millisecond

// race dials the agent through hops, in order, starting the next one
// whenever redialStagger passes without an answer (a staggered race, as
// Happy Eyeballs does for addresses). The first stream wins; any that
// come later are closed. An agent's refusal ends the race.
func (s *Session) race(ctx context.Context, agentID string, hops []router.Endpoint) (streams.Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		e   router.Endpoint
		st  streams.Stream
		err error
	}
	results := make(chan result, len(hops))
	dial := func(e router.Endpoint) {
		dialer := s.cfg.Peer
		if e.Local {
			dialer = s.cfg.Local
		}
		actx, done := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		defer done()
		st, err := dialer.Dial(actx, e, s.request(revtunnel.ResumeAgain))
		results <- result{e, st, err}
	}
	started, answered := 0, 0
	var last error
	var won streams.Stream
	stagger := time.NewTimer(0)
	defer stagger.Stop()
	for answered < len(hops) {
		select {
		case <-stagger.C:
			if won == nil && started < len(hops) {
				go dial(hops[started])
				started++
				stagger.Reset(redialStagger)
			}
			continue
		case r := <-results:
			answered++
			switch {
			case r.err == nil && won == nil:
				won = r.st
				path := s.pathOf(r.e)
				s.resumedPath.Store(&path)
			case r.err == nil:
				r.st.Close() // a slower path: not needed
			default:
				var refused *forward.AgentRefused
				if errors.As(r.err, &refused) && won == nil {
					// The agent answered, and does not hold the session
					// (it restarted): no other path will do better.
					last = &resume.RefusedError{Reason: refused.Reason}
				} else if last == nil || !errors.As(last, new(*resume.RefusedError)) {
					last = fmt.Errorf("agent %s via proxy %s: %w", agentID, r.e.ProxyID, r.err)
				}
			}
		}
		if won != nil || errors.As(last, new(*resume.RefusedError)) {
			// Stop the dials still running; their streams, if any come,
			// are closed as they land.
			cancel()
			if answered == started {
				break
			}
			go func(n int) {
				for range n {
					if r := <-results; r.err == nil {
						r.st.Close()
					}
				}
			}(started - answered)
			break
		}
		if answered == started && started < len(hops) {
			// Every path tried so far failed: the next one at once.
			stagger.Reset(0)
		}
	}
	if won != nil {
		return won, nil
	}
	return nil, last
}

// connected records the agent the session now runs on.
func (s *Session) connected(e router.Endpoint) {
	s.agentID, s.kind = e.AgentID, e.Kind
	if !e.Local {
		s.path = s.pathOf(e)
	}
	if s.cfg.Sticky != nil {
		s.cfg.Sticky.SetStickyAgent(s.cfg.Resource, e.AgentID)
	}
	if s.cfg.Load != nil {
		s.cfg.Load.Add(e.AgentID, 1)
		s.cfg.Load.Succeeded(e.AgentID)
	}
	s.connectTook, s.legs = s.cfg.Clock().Sub(s.started), s.measureLegs(e)
	s.cfg.Observer.Connected(pathKind(e), s.connectTook, s.legs)
}

// pipe carries bytes both ways until either side ends, recording the
// node's login reports as they come; for an ssh resource it then waits a
// moment for a report still on its way. Cancelling ctx closes both sides.
func (s *Session) pipe(ctx context.Context, user ssh.Channel, agent streams.Stream) streams.Result {
	piped := make(chan streams.Result, 1)
	go func() { piped <- streams.Pipe(user, agent) }()
	stop := context.AfterFunc(ctx, func() { user.Close(); agent.Close() })
	defer stop()
	if s.cfg.UserConn != nil {
		// The user's connection ended: so does the pipe, even while the
		// session waits for a new path to its agent.
		defer context.AfterFunc(s.cfg.UserConn, func() { user.Close(); agent.Close() })()
	}
	var res streams.Result
	for done := false; !done; {
		select {
		case r := <-s.reports:
			s.onLogin(r)
		case res = <-piped:
			done = true
		}
	}
	if ctx.Err() != nil && res.Err == nil {
		res.Err = errors.New("the proxy ended the session (shutting down)")
	}
	if s.kind == "ssh" && s.login == "" && s.refused == "" {
		t := time.NewTimer(loginReportWait)
		defer t.Stop()
		select {
		case r := <-s.reports:
			s.onLogin(r)
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return res
}

// onLogin records the login the node let the user take, or its refusal,
// with the session's user and resource.
func (s *Session) onLogin(r *clusterpb.LoginReport) {
	ev := s.event("session.login", "ok", "")
	ev.Login = r.Login
	if r.Refused != "" {
		ev.Outcome, ev.Error = "refused", r.Refused
		s.refused = r.Refused
		if s.login == "" {
			s.login = r.Login
		}
	} else {
		s.login, s.refused = r.Login, ""
	}
	s.showLogin(s.login)
	if _, err := s.cfg.Audit.Append(ev); err != nil {
		s.cfg.Logger.Error("audit login", "session", s.cfg.ID, "err", err)
	}
}

// end records the session's end.
func (s *Session) end(res streams.Result) {
	outcome, errText := "ok", ""
	switch {
	case s.refused != "":
		// The node turned the user away: the session carried bytes (the
		// SSH handshake) but never ran.
		outcome, errText = "refused", "login refused by the node: "+s.refused
	case res.Err != nil:
		outcome, errText = "error", res.Err.Error()
	}
	ev := s.event("session.end", outcome, errText)
	ev.Login = s.login
	if s.login != "" {
		// The node's SSH server took the login: its PTY sessions are
		// recorded under this session's id (see audit.Event.Recording).
		ev.Recording = s.cfg.ID
	}
	ev.BytesIn, ev.BytesOut = res.AtoB, res.BtoA
	ev.Duration = s.cfg.Clock().Sub(s.started)
	if _, err := s.cfg.Audit.Append(ev); err != nil {
		s.cfg.Logger.Error("audit session end", "session", s.cfg.ID, "err", err)
	}
	s.cfg.Observer.Ended(outcome, ev.Duration)
	// The one line an operator reads per session: who, where, how it
	// ended, and where its time went (connect, and each leg's round trip
	// when it connected: see Legs).
	level := slog.LevelInfo
	if outcome != EndOK {
		level = slog.LevelWarn
	}
	s.cfg.Logger.Log(context.Background(), level, "session ended",
		"session", s.cfg.ID, "user", s.cfg.User, "login", s.login, "resource", s.cfg.Resource,
		"agent", s.agentID, "path", s.pathString(), "outcome", outcome, "err", errText,
		"duration", ev.Duration.Round(time.Millisecond), "connect", s.connectTook.Round(time.Microsecond),
		"user_rtt", s.legs.User.Round(time.Microsecond), "peer_rtt", s.legs.Peer.Round(time.Microsecond), "agent_rtt", s.legs.Agent.Round(time.Microsecond),
		"resumes", s.shown.resumes.Load(), "bytes_up", res.AtoB, "bytes_down", res.BtoA)
}

// deny rejects the user's channel for lack of access and records it.
func (s *Session) deny(reason string) {
	if _, err := s.cfg.Audit.Append(s.event("session.denied", "denied", reason)); err != nil {
		s.cfg.Logger.Error("audit denial", "session", s.cfg.ID, "err", err)
	}
	s.reject(reason)
}

// refuse rejects the user's channel and records why.
func (s *Session) refuse(reason string) {
	if _, err := s.cfg.Audit.Append(s.event("session.refused", "refused", reason)); err != nil {
		s.cfg.Logger.Error("audit refusal", "session", s.cfg.ID, "err", err)
	}
	s.reject(reason)
}

func (s *Session) reject(reason string) {
	s.cfg.Logger.Info("session refused", "session", s.cfg.ID, "user", s.cfg.User, "resource", s.cfg.Resource, "reason", reason)
	_ = s.cfg.Channel.Reject(ssh.ConnectionFailed, "warren: "+reason)
}

func (s *Session) pathString() string {
	if s.path != "" {
		return s.path
	}
	if s.agentID == "" {
		return s.cfg.ProxyID
	}
	return s.cfg.ProxyID + ">" + s.agentID
}

func (s *Session) event(typ, outcome, errText string) audit.Event {
	return audit.Event{
		Time:       s.cfg.Clock(),
		Type:       typ,
		SessionID:  s.cfg.ID,
		User:       s.cfg.User,
		Resource:   s.cfg.Resource,
		AgentID:    s.agentID,
		ProxyID:    s.cfg.ProxyID,
		ClientAddr: s.cfg.ClientAddr,
		Path:       s.pathString(),
		Outcome:    outcome,
		Error:      errText,
	}
}
