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

// beforeHello claims the proxy a tunnel reached, before the hello that
// would make the proxy supersede another tunnel of this agent there.
// claimed is set when the claim was made (and must be released).
func (c *conn) beforeHello(claimed *bool) func(proxyID string) error {
	return func(proxyID string) error {
		if c.proxyID != "" && proxyID != c.proxyID {
			return fmt.Errorf("%w: reached %s, want %s", errWrongProxy, proxyID, c.proxyID)
		}
		if err := c.a.dir.claim(c.slot, proxyID); err != nil {
			return err
		}
		*claimed = true
		return nil
	}
}

func (c *conn) run(ctx context.Context) {
	a := c.a
	hostname, _ := os.Hostname()
	// failures counts failed attempts in a row, taken the proxies found
	// held by another slot, idle the waits for a proxy of its own; each
	// sets the backoff of its case.
	failures, taken, idle := 0, 0, 0
	for ctx.Err() == nil {
		// Taken before target: a proxy set that changes in between
		// wakes the wait below at once.
		changed := a.dir.changes()
		addr := c.target()
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
		claimed := false
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		tun, reply, err := revtunnel.Dial(dctx, revtunnel.ClientConfig{
			Addr:      addr,
			AgentID:   a.id.AgentID,
			Signer:    a.signer,
			Trust:     revtunnel.Trust{CA: a.hostCA, Clock: a.cfg.Clock},
			OnProxies: func(set revtunnel.ProxySet) { c.learned(set.Proxies) },
			OnDefinitions: func(d revtunnel.Definitions) {
				if a.definitionsLearned(d.Definitions) {
					c.system.Root.Send(c.pool, resourcesChanged{})
				}
			},
			OnPolicy:    func(p revtunnel.PolicySet) { a.policyLearned(&p) },
			BeforeHello: c.beforeHello(&claimed),
			Logger:      a.log,
		}, revtunnel.Hello{Version: Version, Hostname: hostname, Principals: a.principals(), HostKeys: a.hostKeys()})
		cancel()
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
				a.log.Debug("proxy held by another tunnel slot; trying again", "slot", c.slot, "addr", addr, "in", wait.Round(time.Millisecond), "err", err)
				if !waitChange(ctx, changed, wait) {
					return
				}
				continue
			}
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
		failures, taken = 0, 0
		a.dir.up(c.slot)
		a.renewCert(reply.HostCert)
		a.policyLearned(reply.Policy)
		c.learned(reply.Proxies)
		if a.definitionsLearned(reply.Definitions) {
			c.system.Root.Send(c.pool, resourcesChanged{})
		}
		a.connected.Add(1)
		a.log.Info("tunnel up", "slot", c.slot, "proxy", reply.ProxyID, "addr", addr)
		c.serve(ctx, tun)
		a.connected.Add(-1)
		a.dir.release(c.slot)
		a.log.Info("tunnel down", "slot", c.slot, "proxy", reply.ProxyID, "addr", addr)
		if ctx.Err() != nil {
			return
		}
		// Prefer another proxy next time: this one may be going away.
		a.dir.fail(reply.ProxyID, a.cfg.Clock())
		if !sleep(ctx, c.backoff(0)) {
			return
		}
	}
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

// serve runs one tunnel until it closes or ctx ends.
func (c *conn) serve(ctx context.Context, tun *revtunnel.ClientConn) {
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		tun.Close()
		wg.Wait()
	}()
	stop := context.AfterFunc(tctx, func() { tun.Close() })
	defer stop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.heartbeat(tctx, tun)
	}()
	for {
		req, nch, err := tun.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.a.serveDial(tctx, tun, req, nch)
		}()
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
			if ctx.Err() == nil {
				c.a.log.Warn("heartbeat failed; closing tunnel", "err", err)
			}
			tun.Close()
			return
		}
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

// serveDial connects one session to the resource it names.
func (a *Agent) serveDial(ctx context.Context, tun *revtunnel.ClientConn, req revtunnel.DialRequest, nch ssh.NewChannel) {
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
	switch res.Kind {
	case model.KindTCP:
		d := net.Dialer{Timeout: 5 * time.Second}
		up, err := d.DialContext(ctx, "tcp", res.Addr)
		if err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("agent %s: upstream %s of %q: %v", a.id.AgentID, res.Addr, res.Name, err))
			return
		}
		streams.SetNoDelay(up)
		ch, reqs, err := nch.Accept()
		if err != nil {
			up.Close()
			return
		}
		go ssh.DiscardRequests(reqs)
		streams.Pipe(ch, up.(*net.TCPConn))
	case model.KindSSH:
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		// The node sees the user's address as the entry proxy saw it, and
		// its own as port 22 here: SSH_CONNECTION and SSH_CLIENT say so.
		conn := &sessionConn{ChannelConn: streams.ChannelConn{Channel: ch, Remote: tcpAddr(req.ClientAddr), Local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}},
			tun: tun, sessionID: req.SessionID, resource: res.Name}
		if err := a.node.ServeConn(ctx, conn); err != nil {
			a.log.Debug("ssh session ended", "session", req.SessionID, "err", err)
		}
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
	streams.ChannelConn
	tun       *revtunnel.ClientConn
	sessionID string
	resource  string
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
