// Package session holds the session actor: one per user session, that is
// one user channel to one resource.
//
// The actor resolves the resource from the router's snapshot, picks an
// agent, asks that agent's tunnel actor to dial, records the start of the
// session in the audit log (durably, before the user's channel is
// accepted), pipes bytes both ways, and records the end. A failed dial
// moves on to the next candidate within the session's deadline, so a user
// sees a failure only when no agent can serve the name. Once bytes flow
// the session stays on its agent until it ends.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/asynkron/protoactor-go/remote"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/actors/tunnel"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/revtunnel"
	"github.com/warren-proxy/warren/transport/streams"
)

// Sticky remembers which agent a user connection uses for a resource.
type Sticky interface {
	StickyAgent(resource string) string
	SetStickyAgent(resource, agentID string)
}

// Auditor records audit events durably.
type Auditor interface {
	Append(ev audit.Event) (audit.Event, error)
}

// Config configures one session actor.
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
	// Channel is the user's channel; the actor owns it.
	Channel ssh.NewChannel
	Table   *router.Table
	Audit   Auditor
	// Strategy picks among healthy agents (see the Strategy constants);
	// Region is this proxy's region; Load counts live sessions per agent.
	Strategy string
	Region   string
	Load     Load
	// Sticky, if set, keeps every session of one user connection to one
	// resource on one agent.
	Sticky Sticky
	// OpenStream opens a data stream to a peer proxy that parked the
	// session's channel under token (sessions whose agent's tunnel is on
	// another proxy).
	OpenStream func(ctx context.Context, addr, token string) (streams.Stream, error)
	// DialTimeout bounds the whole connect phase, over every candidate.
	DialTimeout time.Duration
	// AttemptTimeout bounds one candidate (default 5s, at most
	// DialTimeout).
	AttemptTimeout time.Duration
	// ListHint is appended to "unknown resource" refusals: how the user
	// lists resources.
	ListHint string
	Clock    func() time.Time
	Logger   *slog.Logger
	// Done is called once the session has ended and its goroutines have
	// returned.
	Done func()
}

type (
	attemptTimeout struct{ n int }
	peerLost       struct{ addr string }
	pipeDone       struct{ res streams.Result }
	streamResult   struct {
		agentID string
		stream  streams.Stream
		err     error
	}
)

// Actor is the session actor.
type Actor struct {
	cfg        Config
	candidates []router.Endpoint
	lastErr    error
	deadline   time.Time
	started    time.Time
	agentID    string
	current    *router.Endpoint // the candidate being dialled
	path       string           // set when the session crosses a peer proxy
	counted    bool             // the session is in Load
	attempt    int              // numbers dial attempts, for their timers
	timer      *time.Timer
	peerSub    *eventstream.Subscription
	wg         sync.WaitGroup
	stopping   bool
	// login is the login the user took on the node, or refused why the
	// node refused it (from the agent's report through its tunnel).
	login, refused string
	kind           string          // the resource's kind, once connected
	pendingEnd     *streams.Result // the pipe ended; waiting for the login report
}

// loginReportWait is how long a session to an ssh resource whose pipe ended
// waits for the node's login report before it records its end: the report
// and the channel's close travel apart.
const loginReportWait = time.Second

type endNow struct{}

// NewProps returns props for a session actor.
func NewProps(cfg Config) *actor.Props {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return actor.PropsFromProducer(func() actor.Actor { return &Actor{cfg: cfg} })
}

// Receive dispatches messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.onStarted(ctx)
	case *tunnel.DialResult:
		a.onDialResult(ctx, m)
	case *clusterpb.DialResponse:
		a.onRemoteDialResponse(ctx, m)
	case streamResult:
		a.onStreamResult(ctx, m)
	case *actor.DeadLetterResponse:
		// The chosen tunnel actor is gone: its agent just disconnected.
		if a.current != nil {
			a.fail(ctx, fmt.Errorf("agent %s just disconnected", a.current.AgentID))
		}
	case peerLost:
		if a.current != nil && !a.current.Local && a.current.Tunnel.Address == m.addr {
			a.fail(ctx, fmt.Errorf("proxy %s became unreachable", a.current.ProxyID))
		}
	case attemptTimeout:
		// Only the timer of the attempt in flight counts: one that fired
		// just as its attempt ended is stale.
		if a.current != nil && m.n == a.attempt {
			a.fail(ctx, fmt.Errorf("agent %s via proxy %s did not answer in time", a.current.AgentID, a.current.ProxyID))
		}
	case pipeDone:
		a.onPipeDone(ctx, m)
	case *clusterpb.LoginReport:
		a.onLoginReport(m)
		if a.pendingEnd != nil {
			a.end(ctx, *a.pendingEnd)
		}
	case endNow:
		if a.pendingEnd != nil {
			a.end(ctx, *a.pendingEnd)
		}
	case *actor.Stopping:
		a.stopTimer()
		a.unwatchPeer(ctx)
		a.wg.Wait()
	case *actor.Stopped:
		if a.cfg.Done != nil {
			a.cfg.Done()
		}
	}
}

func (a *Actor) onStarted(ctx actor.Context) {
	a.started = a.cfg.Clock()
	a.deadline = a.started.Add(a.cfg.DialTimeout)
	snap := a.cfg.Table.Snapshot()
	eps := snap.Lookup(a.cfg.Resource)
	if len(eps) == 0 {
		a.refuse(ctx, fmt.Sprintf("unknown resource %q%s", a.cfg.Resource, a.cfg.ListHint))
		return
	}
	// The access decision comes before any dial: per endpoint, since the
	// agents serving one name may label it differently.
	allowed, denial := eps[:0:0], ""
	for _, e := range eps {
		d := snap.Policy.Reach(a.cfg.Identity, Target(e))
		if d.Allowed {
			allowed = append(allowed, e)
		} else if denial == "" {
			denial = d.Reason
		}
	}
	if len(allowed) == 0 {
		a.deny(ctx, denial)
		return
	}
	for _, e := range allowed {
		if e.Usable() {
			a.candidates = append(a.candidates, e)
		}
	}
	if len(a.candidates) == 0 {
		a.refuse(ctx, unusableReason(a.cfg.Resource, allowed, a.started))
		return
	}
	a.candidates = orderCandidates(a.candidates, a.cfg.Strategy, a.cfg.Region, a.cfg.Load)
	if a.cfg.Sticky != nil {
		if agentID := a.cfg.Sticky.StickyAgent(a.cfg.Resource); agentID != "" {
			preferAgent(a.candidates, agentID)
		}
	}
	a.tryNext(ctx)
}

// Strategies for choosing an agent among the healthy ones.
const (
	// StrategyDefault prefers an agent whose tunnel is on this proxy, then
	// one in this proxy's region, then spreads over the rest at random.
	StrategyDefault = "default"
	// StrategyRandom picks uniformly among the agents (the anchor's
	// behaviour), whatever proxy holds their tunnel.
	StrategyRandom = "random"
	// StrategyLeastSessions picks the less loaded of two random agents
	// (power of two choices) by live session counts.
	StrategyLeastSessions = "least_sessions"
	// StrategyNearest picks the agent with the lowest measured round trip
	// from this proxy: the tunnel's keepalive RTT, plus the peer link's
	// RTT when the tunnel is on another proxy.
	StrategyNearest = "nearest"
)

// Load counts live sessions per agent and remembers agents that just
// failed a dial, so that the next sessions try them last.
type Load interface {
	Sessions(agentID string) int
	Add(agentID string, delta int)
	Failed(agentID string)
	Succeeded(agentID string)
	RecentlyFailed(agentID string) bool
	// PeerRTT is the measured round trip to a peer proxy (0 if unknown).
	PeerRTT(proxyID string) time.Duration
}

// pathRTT is the measured round trip from this proxy to an agent through
// e, or -1 when part of it is not measured yet.
func pathRTT(e router.Endpoint, load Load) time.Duration {
	if e.RTT <= 0 {
		return -1
	}
	if e.Local {
		return e.RTT
	}
	peer := load.PeerRTT(e.ProxyID)
	if peer <= 0 {
		return -1
	}
	return e.RTT + peer
}

// orderCandidates orders the usable endpoints: agents by the strategy,
// and for each agent its endpoints local first, then this region, then
// newest tunnel first (when an agent has just re-homed, an old route
// through a proxy that died may linger until membership notices).
func orderCandidates(c []router.Endpoint, strategy, region string, load Load) []router.Endpoint {
	byAgent := map[string][]router.Endpoint{}
	var agents []string
	for _, e := range c {
		if byAgent[e.AgentID] == nil {
			agents = append(agents, e.AgentID)
		}
		byAgent[e.AgentID] = append(byAgent[e.AgentID], e)
	}
	tier := func(e router.Endpoint) int {
		switch {
		case e.Local:
			return 0
		case region != "" && e.Region == region:
			return 1
		}
		return 2
	}
	for _, eps := range byAgent {
		sort.SliceStable(eps, func(i, j int) bool {
			if ti, tj := tier(eps[i]), tier(eps[j]); ti != tj {
				return ti < tj
			}
			return eps[i].Connected.After(eps[j].Connected)
		})
	}
	rand.Shuffle(len(agents), func(i, j int) { agents[i], agents[j] = agents[j], agents[i] })
	best := func(id string) int { return tier(byAgent[id][0]) }
	switch strategy {
	case StrategyRandom:
		// Uniform over agents: the shuffle is the order.
	case StrategyLeastSessions:
		if load != nil && len(agents) >= 2 && load.Sessions(agents[1]) < load.Sessions(agents[0]) {
			agents[0], agents[1] = agents[1], agents[0]
		}
		if load != nil && len(agents) > 2 {
			rest := agents[1:]
			sort.SliceStable(rest, func(i, j int) bool { return load.Sessions(rest[i]) < load.Sessions(rest[j]) })
		}
	case StrategyNearest:
		if load != nil {
			// Each agent's endpoints by path RTT; agents by their nearest;
			// unmeasured paths go after measured ones.
			cost := func(e router.Endpoint) time.Duration {
				if d := pathRTT(e, load); d >= 0 {
					return d
				}
				return time.Hour
			}
			for _, eps := range byAgent {
				sort.SliceStable(eps, func(i, j int) bool { return cost(eps[i]) < cost(eps[j]) })
			}
			sort.SliceStable(agents, func(i, j int) bool { return cost(byAgent[agents[i]][0]) < cost(byAgent[agents[j]][0]) })
		}
	default:
		sort.SliceStable(agents, func(i, j int) bool { return best(agents[i]) < best(agents[j]) })
	}
	if load != nil {
		// An agent that just failed a dial (stopped, cut off, upstream
		// down) goes last until it serves a session again.
		sort.SliceStable(agents, func(i, j int) bool { return !load.RecentlyFailed(agents[i]) && load.RecentlyFailed(agents[j]) })
	}
	out := make([]router.Endpoint, 0, len(c))
	for _, id := range agents {
		out = append(out, byAgent[id]...)
	}
	return out
}

// preferAgent moves the endpoints of agentID to the front, keeping order
// otherwise.
func preferAgent(c []router.Endpoint, agentID string) {
	sort.SliceStable(c, func(i, j int) bool { return c[i].AgentID == agentID && c[j].AgentID != agentID })
}

// unusableReason explains why no endpoint of a resource can take a session.
func unusableReason(name string, eps []router.Endpoint, now time.Time) string {
	for _, e := range eps {
		if e.Online && !e.Healthy {
			detail := e.Detail
			if detail == "" {
				detail = "its agent reports it unhealthy"
			}
			return fmt.Sprintf("resource %q is unhealthy: %s", name, detail)
		}
	}
	last := eps[0]
	for _, e := range eps {
		if e.LastSeen.After(last.LastSeen) {
			last = e
		}
	}
	ago := "never"
	if !last.LastSeen.IsZero() {
		ago = now.Sub(last.LastSeen).Round(time.Second).String() + " ago"
	}
	return fmt.Sprintf("resource %q is offline: agent %s has no live tunnel to any proxy (last seen %s)", name, last.AgentID, ago)
}

func (a *Actor) tryNext(ctx actor.Context) {
	remaining := a.deadline.Sub(a.cfg.Clock())
	if len(a.candidates) == 0 || remaining <= 0 {
		msg := fmt.Sprintf("cannot connect to %q", a.cfg.Resource)
		if a.lastErr != nil {
			msg += ": " + a.lastErr.Error()
		}
		a.refuse(ctx, msg)
		return
	}
	next := a.candidates[0]
	a.candidates = a.candidates[1:]
	a.current = &next
	a.agentID = next.AgentID
	a.kind = next.Kind
	// A dial to a proxy that vanished may never be answered: bound each
	// attempt so the next candidate still has time.
	attempt := min(remaining, a.cfg.AttemptTimeout)
	a.attempt++
	n, self, system := a.attempt, ctx.Self(), ctx.ActorSystem()
	// The timer runs a little past the tunnel's own deadline, so the
	// tunnel's more precise answer usually comes first.
	a.timer = time.AfterFunc(attempt+250*time.Millisecond, func() { system.Root.Send(self, attemptTimeout{n}) })
	if next.Local {
		ctx.Request(next.Tunnel, &tunnel.Dial{Timeout: attempt, Request: revtunnel.DialRequest{
			SessionID:  a.cfg.ID,
			Resource:   a.cfg.Resource,
			Port:       a.cfg.Port,
			User:       a.cfg.User,
			ClientAddr: a.cfg.ClientAddr,
		}})
		return
	}
	a.watchPeer(ctx)
	ctx.Request(next.Tunnel, &clusterpb.DialRequest{
		SessionId:  a.cfg.ID,
		Resource:   a.cfg.Resource,
		Port:       a.cfg.Port,
		User:       a.cfg.User,
		ClientAddr: a.cfg.ClientAddr,
		EntryProxy: a.cfg.ProxyID,
		TimeoutMs:  attempt.Milliseconds(),
	})
}

// watchPeer fails the attempt in flight as soon as the link to its proxy
// breaks, instead of waiting out the attempt's timeout.
func (a *Actor) watchPeer(ctx actor.Context) {
	if a.peerSub != nil {
		return
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	a.peerSub = system.EventStream.Subscribe(func(msg any) {
		if ev, ok := msg.(*remote.EndpointTerminatedEvent); ok {
			system.Root.Send(self, peerLost{ev.Address})
		}
	})
}

func (a *Actor) unwatchPeer(ctx actor.Context) {
	if a.peerSub != nil {
		ctx.ActorSystem().EventStream.Unsubscribe(a.peerSub)
		a.peerSub = nil
	}
}

func (a *Actor) stopTimer() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
}

// fail records a failed attempt and moves on to the next candidate.
func (a *Actor) fail(ctx actor.Context, err error) {
	a.stopTimer()
	a.cfg.Logger.Info("dial failed; trying next agent", "session", a.cfg.ID, "resource", a.cfg.Resource, "agent", a.current.AgentID, "proxy", a.current.ProxyID, "err", err)
	if a.cfg.Load != nil {
		a.cfg.Load.Failed(a.current.AgentID)
	}
	a.current = nil
	a.lastErr = err
	a.tryNext(ctx)
}

// expected reports whether a dial answer is for the attempt in flight.
func (a *Actor) expected(agentID string) bool {
	return a.current != nil && a.current.AgentID == agentID && !a.stopping
}

func (a *Actor) onDialResult(ctx actor.Context, m *tunnel.DialResult) {
	if !a.expected(m.AgentID) {
		if m.Channel != nil {
			m.Channel.Close() // a late answer to an attempt given up
		}
		return
	}
	if m.Err != nil {
		a.fail(ctx, m.Err)
		return
	}
	a.connected(ctx, m.AgentID, m.Channel)
}

func (a *Actor) onRemoteDialResponse(ctx actor.Context, m *clusterpb.DialResponse) {
	if !a.expected(m.AgentId) {
		return // the peer closes a parked channel nobody claims
	}
	if !m.Ok {
		a.fail(ctx, errors.New(m.Error))
		return
	}
	a.stopTimer()
	if a.cfg.OpenStream == nil {
		a.fail(ctx, errors.New("this proxy has no peer links"))
		return
	}
	self, system, remaining := ctx.Self(), ctx.ActorSystem(), a.deadline.Sub(a.cfg.Clock())
	agentID, addr, token := m.AgentId, m.PeerAddr, m.Token
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		sctx, cancel := context.WithTimeout(context.Background(), remaining)
		defer cancel()
		st, err := a.cfg.OpenStream(sctx, addr, token)
		system.Root.Send(self, streamResult{agentID: agentID, stream: st, err: err})
	}()
}

func (a *Actor) onStreamResult(ctx actor.Context, m streamResult) {
	if !a.expected(m.agentID) {
		if m.stream != nil {
			m.stream.Close()
		}
		return
	}
	if m.err != nil {
		a.fail(ctx, fmt.Errorf("data stream to proxy %s: %w", a.current.ProxyID, m.err))
		return
	}
	a.connected(ctx, m.agentID, m.stream)
}

// connected records the start, accepts the user's channel and pipes it to
// the agent's stream (a tunnel channel, or a peer data stream).
func (a *Actor) connected(ctx actor.Context, agentID string, agentStream streams.Stream) {
	a.stopTimer()
	a.unwatchPeer(ctx)
	a.agentID = agentID
	if a.cfg.Sticky != nil {
		a.cfg.Sticky.SetStickyAgent(a.cfg.Resource, agentID)
	}
	if a.cfg.Load != nil {
		a.cfg.Load.Add(agentID, 1)
		a.cfg.Load.Succeeded(agentID)
		a.counted = true
	}
	if a.current != nil && !a.current.Local {
		a.path = a.cfg.ProxyID + ">" + a.current.ProxyID + ">" + agentID
	}
	a.current = nil
	// The start is durable before the user's channel is accepted: no
	// session runs that the audit log does not know of.
	if _, err := a.cfg.Audit.Append(a.event("session.start", "started", "")); err != nil {
		agentStream.Close()
		a.cfg.Logger.Error("audit log write failed; refusing session", "session", a.cfg.ID, "err", err)
		a.reject(ctx, "the proxy cannot write its audit log; try another proxy")
		return
	}
	userCh, reqs, err := a.cfg.Channel.Accept()
	if err != nil {
		agentStream.Close()
		a.end(ctx, streams.Result{Err: fmt.Errorf("accept user channel: %w", err)})
		return
	}
	go ssh.DiscardRequests(reqs)
	self, system := ctx.Self(), ctx.ActorSystem()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		res := streams.Pipe(userCh, agentStream)
		system.Root.Send(self, pipeDone{res})
	}()
	a.cfg.Logger.Info("session started", "session", a.cfg.ID, "user", a.cfg.User, "resource", a.cfg.Resource, "agent", a.agentID, "path", a.pathString())
}

func (a *Actor) onPipeDone(ctx actor.Context, m pipeDone) {
	if a.kind == "ssh" && a.login == "" && a.refused == "" {
		res := m.res
		a.pendingEnd = &res
		self, system := ctx.Self(), ctx.ActorSystem()
		time.AfterFunc(loginReportWait, func() { system.Root.Send(self, endNow{}) })
		return
	}
	a.end(ctx, m.res)
}

// onLoginReport records the login the node let the user take, or its
// refusal, with the session's user and resource.
func (a *Actor) onLoginReport(m *clusterpb.LoginReport) {
	if m.SessionId != a.cfg.ID {
		return
	}
	ev := a.event("session.login", "ok", "")
	ev.Login = m.Login
	if m.Refused != "" {
		ev.Outcome, ev.Error = "refused", m.Refused
		a.refused = m.Refused
	} else {
		a.login, a.refused = m.Login, ""
	}
	if a.login == "" && m.Refused != "" {
		a.login = m.Login
	}
	if _, err := a.cfg.Audit.Append(ev); err != nil {
		a.cfg.Logger.Error("audit login", "session", a.cfg.ID, "err", err)
	}
}

// end records the session's end and stops the actor.
func (a *Actor) end(ctx actor.Context, res streams.Result) {
	if a.stopping {
		return
	}
	a.pendingEnd = nil
	if a.counted {
		a.cfg.Load.Add(a.agentID, -1)
		a.counted = false
	}
	outcome, errText := "ok", ""
	switch {
	case a.refused != "":
		// The node turned the user away: the session carried bytes (the
		// SSH handshake) but never ran.
		outcome, errText = "refused", "login refused by the node: "+a.refused
	case res.Err != nil:
		outcome, errText = "error", res.Err.Error()
	}
	ev := a.event("session.end", outcome, errText)
	ev.Login = a.login
	ev.BytesIn, ev.BytesOut = res.AtoB, res.BtoA
	ev.Duration = a.cfg.Clock().Sub(a.started)
	if _, err := a.cfg.Audit.Append(ev); err != nil {
		a.cfg.Logger.Error("audit session end", "session", a.cfg.ID, "err", err)
	}
	a.cfg.Logger.Info("session ended", "session", a.cfg.ID, "resource", a.cfg.Resource, "agent", a.agentID, "in", res.AtoB, "out", res.BtoA, "err", errText)
	a.stopping = true
	ctx.Stop(ctx.Self())
}

// Target describes an endpoint's resource for an access decision.
func Target(e router.Endpoint) access.Target {
	return access.Target{Name: e.Name, Kind: e.Kind, Labels: e.Labels, Port: e.Port}
}

// deny rejects the user's channel for lack of access and records it.
func (a *Actor) deny(ctx actor.Context, reason string) {
	if _, err := a.cfg.Audit.Append(a.event("session.denied", "denied", reason)); err != nil {
		a.cfg.Logger.Error("audit denial", "session", a.cfg.ID, "err", err)
	}
	a.reject(ctx, reason)
}

// refuse rejects the user's channel and records why.
func (a *Actor) refuse(ctx actor.Context, reason string) {
	if _, err := a.cfg.Audit.Append(a.event("session.refused", "refused", reason)); err != nil {
		a.cfg.Logger.Error("audit refusal", "session", a.cfg.ID, "err", err)
	}
	a.reject(ctx, reason)
}

func (a *Actor) reject(ctx actor.Context, reason string) {
	a.cfg.Logger.Info("session refused", "session", a.cfg.ID, "user", a.cfg.User, "resource", a.cfg.Resource, "reason", reason)
	_ = a.cfg.Channel.Reject(ssh.ConnectionFailed, "warren: "+reason)
	a.stopping = true
	ctx.Stop(ctx.Self())
}

func (a *Actor) pathString() string {
	if a.path != "" {
		return a.path
	}
	if a.agentID == "" {
		return a.cfg.ProxyID
	}
	return a.cfg.ProxyID + ">" + a.agentID
}

func (a *Actor) event(typ, outcome, errText string) audit.Event {
	return audit.Event{
		Time:       a.cfg.Clock(),
		Type:       typ,
		SessionID:  a.cfg.ID,
		User:       a.cfg.User,
		Resource:   a.cfg.Resource,
		AgentID:    a.agentID,
		ProxyID:    a.cfg.ProxyID,
		ClientAddr: a.cfg.ClientAddr,
		Path:       a.pathString(),
		Outcome:    outcome,
		Error:      errText,
	}
}
