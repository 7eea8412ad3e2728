package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/transport/revtunnel"
	"github.com/warren-proxy/warren/transport/streams"
)

// conn is a connection actor: it keeps one tunnel up, reconnecting with
// jittered exponential backoff, heartbeats over it and serves the dials
// that come through it.
type conn struct {
	a       *Agent
	pool    *actor.PID
	system  *actor.ActorSystem
	slot    string
	proxyID string // the proxy a mesh slot is for; empty for peering slots
	kick    chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newConnProps(a *Agent, slot, proxyID string) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &conn{a: a, slot: slot, proxyID: proxyID, kick: make(chan struct{}, 1)}
	})
}

// Receive dispatches messages.
func (c *conn) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		var runCtx context.Context
		runCtx, c.cancel = context.WithCancel(context.Background())
		parent, system := ctx.Parent(), ctx.ActorSystem()
		c.pool, c.system = parent, system
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.run(runCtx)
			if runCtx.Err() == nil {
				system.Root.Send(parent, slotDone{c.slot})
			}
		}()
	case resourcesChanged:
		select {
		case c.kick <- struct{}{}:
		default:
		}
	case *actor.Stopping:
		c.cancel()
		c.wg.Wait()
	}
}

// backoff returns the wait before attempt n (0-based): exponential from
// ReconnectMin up to ReconnectMax, with full jitter in its upper half so
// that agents cut off together do not come back together.
func (c *conn) backoff(n int) time.Duration {
	return backoff(c.a.cfg.ReconnectMin, c.a.cfg.ReconnectMax, n)
}

func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo << min(n, 16)
	if d > hi || d <= 0 {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

// target returns the address to dial next, or "" when there is none: a
// mesh slot's proxy left the set, the mesh bootstrap slot's work is done,
// or every known proxy is held by another peering slot.
func (c *conn) target() string {
	switch {
	case c.slot == slotBootstrap && len(c.a.dir.known()) > 0:
		return "" // the mesh slots take over (the pool gives its proxy one)
	case c.proxyID == "":
		return c.a.dir.pick(c.slot, c.a.cfg.Clock())
	}
	for _, p := range c.a.dir.known() {
		if p.ID == c.proxyID {
			return p.TunnelAddr
		}
	}
	return ""
}

// errWrongProxy refuses a mesh slot's tunnel to another proxy than its
// own (an address reused since the proxy set was sent).
var errWrongProxy = errors.New("not the proxy this mesh slot is for")

// beforeHello claims the proxy a tunnel reached under key (the slot, or
// the slot's name for the proxy it moves to), before the hello that would
// make the proxy supersede another tunnel of this agent there.
// claimed is set when the claim was made (and must be released).
func (c *conn) beforeHello(key string, claimed *bool) func(proxyID string) error {
	return func(proxyID string) error {
		if c.proxyID != "" && proxyID != c.proxyID {
			return fmt.Errorf("%w: reached %s, want %s", errWrongProxy, proxyID, c.proxyID)
		}
		if err := c.a.dir.claim(key, proxyID); err != nil {
			return err
		}
		*claimed = true
		return nil
	}
}

// dial opens a tunnel to addr whose proxy is claimed under key before
// the hello; claimed says whether the claim was made (release it if the
// dial failed).
//
// leave is told when the proxy says it is shutting down.
func (c *conn) dial(ctx context.Context, addr, key string, leave *leaveSignal) (tun *revtunnel.ClientConn, reply revtunnel.HelloReply, claimed bool, err error) {
	a := c.a
	hostname, _ := os.Hostname()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tun, reply, err = revtunnel.Dial(dctx, revtunnel.ClientConfig{
		Addr:    addr,
		AgentID: a.id.AgentID,
		Signer:  a.signer,
		Trust:   revtunnel.Trust{CA: a.hostCA, Clock: a.cfg.Clock},
		OnProxies: func(set revtunnel.ProxySet) {
			if set.Leaving {
				// Before the set that leaves the proxy out, so that no
				// slot picks its address meanwhile.
				a.dir.left(a.cfg.Clock(), addr)
				leave.fire()
			}
			c.learned(set.Proxies)
		},
		OnDefinitions: func(d revtunnel.Definitions) {
			if a.definitionsLearned(d.Definitions) {
				c.system.Root.Send(c.pool, resourcesChanged{})
			}
		},
		OnPolicy:    func(p revtunnel.PolicySet) { a.policyLearned(&p) },
		BeforeHello: c.beforeHello(key, &claimed),
		Logger:      a.log,
	}, revtunnel.Hello{Version: Version, Hostname: hostname, Principals: a.principals(), HostKeys: a.hostKeys()})
	return tun, reply, claimed, err
}

// took applies what a proxy's hello reply carries.
func (c *conn) took(reply revtunnel.HelloReply) {
	a := c.a
	a.renewCert(reply.HostCert)
	a.policyLearned(reply.Policy)
	c.learned(reply.Proxies)
	if a.definitionsLearned(reply.Definitions) {
		c.system.Root.Send(c.pool, resourcesChanged{})
	}
}

func (c *conn) run(ctx context.Context) {
	a := c.a
	// failures counts failed attempts in a row, taken the proxies found
	// held by another slot, idle the waits for a proxy of its own; each
	// sets the backoff of its case. busy counts the busy answers in a row
	// (see below), and retry is the busy proxy to dial again rather than
	// pick anew.
	failures, taken, idle, busy := 0, 0, 0, 0
	retry := ""
	for ctx.Err() == nil {
		// Taken before target: a proxy set that changes in between
		// wakes the wait below at once.
		changed := a.dir.changes()
		addr := c.target()
		if retry != "" && addr != "" && c.proxyID == "" && a.dir.dialable(retry) {
			addr = retry
		}
		retry = ""
		if addr == "" {
			if c.proxyID != "" || c.slot == slotBootstrap {
				return
			}
			// Every known proxy has a tunnel from another slot; one more
			// there would supersede it. Wait for the proxy set to change
			// (a proxy joins), looking again now and then.
			if idle == 0 {
				a.log.Info("tunnel slot idle: every known proxy has a tunnel from another slot", "slot", c.slot, "proxies", len(a.dir.known()), "tunnels", strings.Join(a.dir.holders(), ","))
			}
			wait := c.backoff(idle)
			idle++
			if !waitChange(ctx, changed, wait) {
				return
			}
			continue
		}
		idle = 0
		leave := newLeaveSignal()
		tun, reply, claimed, err := c.dial(ctx, addr, c.slot, leave)
		if err != nil {
			if claimed {
				a.dir.release(c.slot)
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, revtunnel.ErrProxyTaken) && !errors.Is(err, errWrongProxy) {
				// A load balancer (or an address the set has not caught
				// up with) led to a proxy another slot holds: nothing is
				// wrong with it. Try again later, or at once when the
				// other slots' tunnels bring a new proxy set.
				wait := c.backoff(taken)
				taken++
				busy = 0
				a.log.Debug("proxy held by another tunnel slot; trying again", "slot", c.slot, "addr", addr, "in", wait.Round(time.Millisecond), "err", err)
				if !waitChange(ctx, changed, wait) {
					return
				}
				continue
			}
			if d, ok := busyWait(err); ok && busy < maxBusyRetries {
				// The proxy turned the connection away before its
				// handshake, too many others logging in (a fleet behind
				// one address re-homing at once): it is not failing, and
				// is still the best proxy to have. Try it again after the
				// wait it asked for, not another, farther one, and do not
				// avoid it. The busy line is unauthenticated (anyone who
				// can answer at addr can send it), so all it may cost is
				// this bounded wait: at most maxBusyRetries of them in a
				// row, each capped, before the proxy is taken for failed
				// as below. It chooses nothing else.
				busy++
				a.log.Debug("proxy busy; trying it again", "slot", c.slot, "proxy", addr, "in", d.Round(time.Millisecond), "busy", busy)
				// Not woken by a change of the proxy set: a fleet turned
				// away together would come back together.
				if !sleep(ctx, d) {
					return
				}
				retry = addr
				continue
			}
			busy = 0
			wait := c.backoff(failures)
			a.log.Warn("tunnel failed; retrying", "slot", c.slot, "proxy", addr, "in", wait.Round(time.Millisecond), "err", err)
			a.dir.fail(addr, a.cfg.Clock())
			failures++
			// A change of the proxy set (this one gone, another come)
			// ends the wait: the slot re-homes promptly.
			if !waitChange(ctx, changed, wait) {
				return
			}
			continue
		}
		failures, taken, busy = 0, 0, 0
		a.dir.up(c.slot, a.cfg.Clock())
		c.took(reply)
		a.connected.Add(1)
		a.metrics.up(tun, reply.ProxyID)
		a.log.Info("tunnel up", "slot", c.slot, "proxy", reply.ProxyID, "addr", addr)
		proxyID := c.serve(ctx, tun, reply.ProxyID, leave)
		a.metrics.down(tun)
		a.connected.Add(-1)
		a.dir.release(c.slot)
		a.log.Info("tunnel down", "slot", c.slot, "proxy", proxyID)
		if ctx.Err() != nil {
			return
		}
		// Prefer another proxy next time: this one may be going away.
		a.dir.fail(proxyID, a.cfg.Clock())
		if !sleep(ctx, c.backoff(0)) {
			return
		}
	}
}

// Bounds on retrying a busy proxy: the consecutive busy answers a slot
// takes from one proxy before it takes it for failed, and the wait per
// answer (the proxy's hint, capped by revtunnel at MaxBusyRetryAfter,
// plus up to a tenth more of jitter: the proxy jitters its hints, and
// spaces them to its pace of admission). With the longest hints that is
// under a minute of trying one proxy.
const (
	maxBusyRetries = 8
	minBusyWait    = 100 * time.Millisecond
)

// busyWait reports whether err is a proxy's busy answer, and the wait
// before trying it again: its hint within [minBusyWait,
// MaxBusyRetryAfter], plus jitter.
func busyWait(err error) (time.Duration, bool) {
	var be *revtunnel.BusyError
	if !errors.As(err, &be) {
		return 0, false
	}
	d := min(max(be.RetryAfter, minBusyWait), revtunnel.MaxBusyRetryAfter)
	return d + rand.N(d/10+1), true
}

// waitChange waits d, or less if the proxy set changes (changed closes);
// it reports false when ctx ends first.
func waitChange(ctx context.Context, changed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-changed:
		return true
	case <-t.C:
		return true
	}
}

// learned records a proxy set and tells the pool when it changed.
func (c *conn) learned(set []revtunnel.ProxyInfo) {
	if c.a.proxiesLearned(set) {
		c.system.Root.Send(c.pool, proxiesChanged{})
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serve runs the slot's tunnel until it ends or ctx ends, and returns
// the id of the proxy it ended on. A peering slot asks the directory now
// and then whether to move to a nearer proxy (the home rule), and moves
// at once when its proxy says it is shutting down (leave), trying again
// every leaveRetry until it has moved or the tunnel ends. To move, it
// opens its tunnel there first, then serves that one and retires the old
// one, whose sessions in flight go on to their end.
func (c *conn) serve(ctx context.Context, tun *revtunnel.ClientConn, proxyID string, leave *leaveSignal) string {
	a := c.a
	s := c.startServing(ctx, tun)
	check := time.NewTicker(a.cfg.ProbeInterval)
	defer check.Stop()
	left := leave.done()
	var again <-chan time.Time // while leaving: the next try
	leaving := false
	for {
		select {
		case <-ctx.Done():
			s.close()
			return proxyID
		case <-s.done:
			s.close()
			return proxyID
		case <-check.C:
		case <-left:
			left, leaving = nil, true
			a.dir.left(a.cfg.Clock(), proxyID)
		case <-again:
		}
		again = nil
		if c.proxyID != "" || c.slot == slotBootstrap {
			continue // mesh slots stay with their proxy
		}
		var addr, to string
		if leaving {
			addr = a.dir.pick(c.slot, a.cfg.Clock())
			to = addr
			if addr == "" {
				again = time.After(leaveRetry)
				continue
			}
		} else if addr, to = a.dir.move(c.slot, a.cfg.Clock()); addr == "" {
			continue
		}
		nleave := newLeaveSignal()
		ntun, reply, claimed, err := c.dial(ctx, addr, c.slot+nextSuffix, nleave)
		if err != nil {
			if claimed {
				a.dir.release(c.slot + nextSuffix)
			}
			if leaving {
				again = time.After(leaveRetry)
			}
			if _, busy := busyWait(err); busy && ctx.Err() == nil {
				// Full of handshakes now, not failing: the next check
				// may move there.
				a.log.Debug("nearer proxy busy; staying for now", "slot", c.slot, "proxy", proxyID, "to", to)
				continue
			}
			if ctx.Err() == nil && !errors.Is(err, revtunnel.ErrProxyTaken) {
				a.dir.fail(addr, a.cfg.Clock())
				a.log.Info("could not move tunnel to another proxy; staying", "slot", c.slot, "proxy", proxyID, "to", to, "leaving", leaving, "err", err)
			}
			continue
		}
		retiring := a.dir.promote(c.slot, a.cfg.Clock())
		if leaving {
			a.log.Info("tunnel moved off a proxy that is shutting down", "slot", c.slot, "from", proxyID, "to", reply.ProxyID, "addr", addr)
		} else {
			a.log.Info("tunnel moved to a nearer proxy", "slot", c.slot, "from", proxyID, "to", reply.ProxyID, "addr", addr)
		}
		c.took(reply)
		old := s
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.retire(ctx, old, retiring)
		}()
		s, proxyID = c.startServing(ctx, ntun), reply.ProxyID
		left, leaving = nleave.done(), false
	}
}

// leaveRetry is how often a slot whose proxy is shutting down tries again
// to open its tunnel elsewhere.
const leaveRetry = time.Second

// leaveSignal is fired when a tunnel's proxy says it is shutting down.
type leaveSignal struct {
	once sync.Once
	ch   chan struct{}
}

func newLeaveSignal() *leaveSignal { return &leaveSignal{ch: make(chan struct{})} }

func (l *leaveSignal) fire() { l.once.Do(func() { close(l.ch) }) }

func (l *leaveSignal) done() <-chan struct{} { return l.ch }

// serving is one tunnel being served: its heartbeats, and the dials that
// come through it.
type serving struct {
	tun      *revtunnel.ClientConn
	stopBeat context.CancelFunc
	beats    sync.WaitGroup
	sessions sync.WaitGroup
	active   atomic.Int64  // sessions in flight
	done     chan struct{} // closed when the tunnel has closed
}

func (c *conn) startServing(ctx context.Context, tun *revtunnel.ClientConn) *serving {
	bctx, stop := context.WithCancel(ctx)
	s := &serving{tun: tun, stopBeat: stop, done: make(chan struct{})}
	c.a.uploads.tunnelUp(tun)
	s.beats.Add(1)
	go func() {
		defer s.beats.Done()
		c.heartbeat(bctx, tun)
	}()
	go func() {
		defer close(s.done)
		defer c.a.uploads.tunnelDown(tun)
		for {
			req, nch, err := tun.Accept()
			if err != nil {
				return
			}
			s.active.Add(1)
			s.sessions.Add(1)
			go func() {
				defer s.sessions.Done()
				defer s.active.Add(-1)
				c.a.serveDial(ctx, tun, req, nch)
			}()
		}
	}()
	return s
}

// close closes the tunnel, ending its sessions, and waits for them.
func (s *serving) close() {
	s.stopBeat()
	s.tun.Close()
	<-s.done
	s.beats.Wait()
	s.sessions.Wait()
}

// retireGrace bounds how long a retired tunnel stays up for its sessions.
const retireGrace = time.Hour

// retire takes a tunnel out of routing and closes it once its sessions
// have ended: its last heartbeat serves no resource, so its proxy routes
// new sessions through the slot's new tunnel, while the sessions in
// flight here go on. A dial the proxy routed before that heartbeat is
// still served.
func (c *conn) retire(ctx context.Context, s *serving, claim string) {
	defer c.a.dir.release(claim)
	defer s.close()
	s.stopBeat()
	s.beats.Wait()
	hctx, cancel := context.WithTimeout(ctx, 2*c.a.cfg.HeartbeatInterval)
	_, err := s.tun.Heartbeat(hctx, revtunnel.Heartbeat{}) // no resources
	cancel()
	if err != nil {
		return
	}
	deadline := time.NewTimer(retireGrace)
	defer deadline.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for s.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-deadline.C:
			c.a.log.Info("closing a retired tunnel with sessions still on it", "sessions", s.active.Load(), "after", retireGrace)
			return
		case <-poll.C:
		}
	}
}

// heartbeat sends the resource statuses at once, every interval, and
// whenever they change; a failed heartbeat closes the tunnel. Resources
// the proxy refuses (outside this agent's grant) are logged once per
// change. At half its life the certificate is renewed.
func (c *conn) heartbeat(ctx context.Context, tun *revtunnel.ClientConn) {
	t := time.NewTicker(c.a.cfg.HeartbeatInterval)
	defer t.Stop()
	var seq uint64
	lastRefused := ""
	for {
		seq++
		hctx, cancel := context.WithTimeout(ctx, c.a.cfg.HeartbeatInterval*2)
		reply, err := tun.Heartbeat(hctx, revtunnel.Heartbeat{Seq: seq, Resources: c.a.health.statuses()})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return // stopped: the tunnel is its owner's to close (or retire)
			}
			c.a.log.Warn("heartbeat failed; closing tunnel", "err", err)
			tun.Close()
			return
		}
		c.a.metrics.beat(tun, c.a.cfg.Clock())
		if refused := describeRefused(reply.Refused); refused != lastRefused {
			lastRefused = refused
			if refused != "" {
				c.a.log.Error("the proxy refuses to route some resources to this agent", "proxy", tun.Addr, "refused", refused)
			}
		}
		if c.a.renewDue() {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			cert, err := tun.Renew(rctx)
			cancel()
			if err != nil {
				c.a.log.Warn("certificate renewal failed", "err", err)
			} else {
				c.a.renewCert(cert)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func describeRefused(rs []revtunnel.Refused) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.Name + ": " + r.Reason
	}
	return strings.Join(parts, "; ")
}

// serveDial connects one session to the resource it names. A resumable
// session (transport/resume) runs on the agent, not on the tunnel: its
// hop is this channel for now, and the session goes on over the next hop
// when this one breaks.
func (a *Agent) serveDial(ctx context.Context, tun *revtunnel.ClientConn, req revtunnel.DialRequest, nch ssh.NewChannel) {
	if req.Resume != "" && (len(req.SessionID) > 64 || !model.ValidName(req.SessionID)) {
		// Looked up and logged below: checked first, as every name.
		_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("agent %s: invalid session id %s", a.id.AgentID, model.Quote(req.SessionID)))
		return
	}
	switch req.Resume {
	case "", revtunnel.ResumeStart:
	case revtunnel.ResumeAgain:
		a.resumeHop(ctx, req, nch)
		return
	default:
		_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("agent %s: unknown resume mode %s", a.id.AgentID, model.Quote(req.Resume)))
		return
	}
	var res *ResourceConfig
	served := a.resources()
	for i := range served {
		if served[i].Name == req.Resource {
			res = &served[i]
		}
	}
	if res == nil {
		_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("agent %s does not serve %q", a.id.AgentID, req.Resource))
		return
	}
	var up net.Conn
	if res.Kind == model.KindTCP {
		d := net.Dialer{Timeout: 5 * time.Second}
		var err error
		if up, err = d.DialContext(ctx, "tcp", res.Addr); err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("agent %s: upstream %s of %q: %v", a.id.AgentID, res.Addr, res.Name, err))
			return
		}
		streams.SetNoDelay(up)
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		if up != nil {
			up.Close()
		}
		return
	}
	go ssh.DiscardRequests(reqs)
	var stream streams.Stream = ch
	if req.Resume == revtunnel.ResumeStart {
		rc, hopDone, err := a.held.Accept(ch)
		if err != nil {
			a.log.Info("refused a resumable session", "session", req.SessionID, "err", err)
			if up != nil {
				up.Close()
			}
			return
		}
		// The session runs on the agent from here; this goroutine, which
		// the tunnel waits for, lasts as long as the channel is its hop.
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.serveSession(a.ctx, tun, req, res, rc, up)
		}()
		waitHop(ctx, hopDone)
		return
	}
	a.serveSession(ctx, tun, req, res, stream, up)
}

// serveSession carries one session to its resource: the upstream socket
// up of a tcp resource, or the embedded SSH server.
func (a *Agent) serveSession(ctx context.Context, tun *revtunnel.ClientConn, req revtunnel.DialRequest, res *ResourceConfig, s streams.Stream, up net.Conn) {
	switch res.Kind {
	case model.KindTCP:
		stop := context.AfterFunc(ctx, func() { s.Close(); up.Close() })
		defer stop()
		streams.Pipe(s, up.(*net.TCPConn))
	case model.KindSSH:
		// The node sees the user's address as the entry proxy saw it, and
		// its own as port 22 here: SSH_CONNECTION and SSH_CLIENT say so.
		conn := &sessionConn{Conn: &streams.Conn{Stream: s, Remote: tcpAddr(req.ClientAddr), Local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}},
			tun: tun, sessionID: req.SessionID, resource: res.Name, ticket: req.Ticket}
		if err := a.node.ServeConn(ctx, conn); err != nil {
			a.log.Debug("ssh session ended", "session", req.SessionID, "err", err)
		}
	}
}

// resumeHop gives a session the agent holds its new hop.
func (a *Agent) resumeHop(ctx context.Context, req revtunnel.DialRequest, nch ssh.NewChannel) {
	if !a.held.Holds(req.SessionID) {
		_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("agent %s does not hold session %s (it ended, or the agent restarted)", a.id.AgentID, model.Quote(req.SessionID)))
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	_, hopDone, err := a.held.Accept(ch)
	if err != nil {
		a.log.Info("refused to resume a session", "session", req.SessionID, "err", err)
		return
	}
	a.log.Info("session resumed on a new hop", "session", req.SessionID)
	a.recording.mark(req.SessionID, resumeMarker)
	waitHop(ctx, hopDone)
}

// waitHop waits until a resumable session stops using a hop, or the tunnel
// ends (which ends the hop too).
func waitHop(ctx context.Context, hopDone <-chan struct{}) {
	select {
	case <-hopDone:
	case <-ctx.Done():
	}
}

// tcpAddr parses a host:port the proxy sent, or returns nil.
func tcpAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

// sessionConn is one session's channel, as the embedded SSH server sees
// it; it remembers the session and tunnel so a login can be reported.
type sessionConn struct {
	net.Conn
	tun       *revtunnel.ClientConn
	sessionID string
	resource  string
	ticket    string // the dialing proxy's recording ticket (revtunnel.RecordingTicket)
}

// reportLogin is the SSH server's OnLogin hook.
func reportLogin(conn net.Conn, login, keyID string) {
	if sc, ok := conn.(*sessionConn); ok {
		_ = sc.tun.ReportLogin(revtunnel.Login{SessionID: sc.sessionID, Login: login, KeyID: keyID})
	}
}

// reportLoginRefused is the SSH server's OnLoginRefused hook: the proxy
// audits the session as refused, with the node's last reason.
func reportLoginRefused(conn net.Conn, login string, reasons []string) {
	sc, ok := conn.(*sessionConn)
	if !ok || len(reasons) == 0 {
		return
	}
	// Clients offer plain keys too; the refusal of the certificate is the
	// one that says something.
	why := reasons[len(reasons)-1]
	for _, r := range reasons {
		if strings.Contains(r, ", certificate ") {
			why = r
		}
	}
	l := revtunnel.Login{SessionID: sc.sessionID, Login: login, Refused: why}
	if len(l.Refused) > 256 {
		l.Refused = l.Refused[:256]
	}
	if l.Validate() != nil {
		l.Login = "-" // a login the user typed that is no login at all
		l.Refused = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return '?'
			}
			return r
		}, l.Refused)
	}
	_ = sc.tun.ReportLogin(l)
}
