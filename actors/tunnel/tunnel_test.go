package tunnel

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// These tests run the tunnel actor in a real actor system inside synctest
// bubbles, on a fake connection to its agent: keepalive intervals and dial
// timeouts take no real time.

// fakeConn is the agent's side as the tunnel actor sees it.
type fakeConn struct {
	handler chan revtunnel.Handler // Serve hands over its handler
	closed  chan struct{}
	once    sync.Once

	mu      sync.Mutex
	dial    func(ctx context.Context, req revtunnel.DialRequest) (ssh.Channel, error)
	dials   []revtunnel.DialRequest
	answers atomic.Bool // keepalives are answered
	pings   atomic.Int32
}

func newFakeConn() *fakeConn {
	c := &fakeConn{handler: make(chan revtunnel.Handler, 1), closed: make(chan struct{})}
	c.answers.Store(true)
	return c
}

func (c *fakeConn) Serve(h revtunnel.Handler) error {
	c.handler <- h
	<-c.closed
	return errors.New("connection closed")
}

func (c *fakeConn) Dial(ctx context.Context, req revtunnel.DialRequest) (ssh.Channel, error) {
	c.mu.Lock()
	c.dials = append(c.dials, req)
	f := c.dial
	c.mu.Unlock()
	return f(ctx, req)
}

func (c *fakeConn) Keepalive(timeout time.Duration) error {
	c.pings.Add(1)
	if c.answers.Load() {
		time.Sleep(5 * time.Millisecond) // the round trip
		return nil
	}
	time.Sleep(timeout)
	return errors.New("no keepalive reply")
}

func (c *fakeConn) SendProxies(revtunnel.ProxySet) error        { return nil }
func (c *fakeConn) SendDefinitions(revtunnel.Definitions) error { return nil }
func (c *fakeConn) SendPolicy(revtunnel.PolicySet) error        { return nil }
func (c *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 50000}
}
func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// channel is an ssh.Channel that records its close.
type channel struct{ closed atomic.Bool }

func (c *channel) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *channel) Write(p []byte) (int, error) { return len(p), nil }
func (c *channel) Close() error                { c.closed.Store(true); return nil }
func (c *channel) CloseWrite() error           { return nil }
func (c *channel) SendRequest(string, bool, []byte) (bool, error) {
	return false, nil
}
func (c *channel) Stderr() io.ReadWriter { return nil }

// parker parks channels under sequential tokens.
type parker struct {
	mu sync.Mutex
	m  map[string]ssh.Channel
}

func (p *parker) Park(ch ssh.Channel) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	token := "t" + string(rune('0'+len(p.m)))
	p.m[token] = ch
	return token, nil
}

// recorder is an actor that keeps what it receives (the router, a session).
type recorder struct {
	mu   sync.Mutex
	msgs []any
}

func (r *recorder) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *router.Heartbeat:
		// Kept before the verdict: the test reads what was kept once the
		// heartbeat has its answer.
		r.add(m)
		if m.Reply != nil {
			m.Reply <- router.HeartbeatVerdict{}
		}
	case *router.TunnelUp, *router.TunnelDown, *router.TunnelRTT, *clusterpb.LoginReport:
		r.add(m)
	}
}

func (r *recorder) add(m any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
}

func count[T any](r *recorder) (n int, last T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if v, ok := m.(T); ok {
			n, last = n+1, v
		}
	}
	return n, last
}

type auditLog struct {
	mu     sync.Mutex
	events []audit.Event
}

func (l *auditLog) Append(ev audit.Event) (audit.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
	return ev, nil
}

// rig is one tunnel actor with its fakes.
type rig struct {
	system  *actor.ActorSystem
	conn    *fakeConn
	router  *recorder
	parked  *parker
	log     *auditLog
	pid     *actor.PID
	h       revtunnel.Handler
	stopped chan struct{}
}

func withTunnel(t *testing.T, f func(t *testing.T, r *rig)) {
	synctest.Test(t, func(t *testing.T) {
		system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
		pub, _, _ := ed25519.GenerateKey(nil)
		key, _ := ssh.NewPublicKey(pub)
		r := &rig{system: system, conn: newFakeConn(), router: &recorder{}, parked: &parker{m: map[string]ssh.Channel{}}, log: &auditLog{}, stopped: make(chan struct{})}
		routerPID := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return r.router }))
		props, err := NewProps(Config{
			Conn: r.conn, AgentID: "a1", HostKey: key, Router: routerPID, ProxyID: "p1",
			Hello:             func(revtunnel.Hello) revtunnel.HelloReply { return revtunnel.HelloReply{} },
			KeepaliveInterval: 2 * time.Second, KeepaliveCount: 3,
			Rendezvous: r.parked, PeerAddr: "127.0.0.1:7946", Audit: r.log,
			Done: func() { close(r.stopped) },
		})
		if err != nil {
			t.Fatal(err)
		}
		r.pid = system.Root.Spawn(props)
		r.h = <-r.conn.handler
		f(t, r)
		system.Root.Stop(r.pid)
		<-r.stopped
		system.Shutdown()
		time.Sleep(time.Minute) // protoactor's timers (dead-letter throttle) end
	})
}

func (r *rig) hello(t *testing.T) {
	t.Helper()
	if reply := r.h.Hello(revtunnel.Hello{Hostname: "node-1", Version: "1.0"}); reply.Error != "" {
		t.Fatal(reply.Error)
	}
	synctest.Wait()
	if n, up := count[*router.TunnelUp](r.router); n != 1 || up.Agent.ID != "a1" || up.Agent.Hostname != "node-1" || up.Agent.ProxyID != "p1" {
		t.Fatalf("TunnelUp %d, %+v", n, up)
	}
}

func TestTunnelDialParksTheChannelAndRoutesTheLoginReport(t *testing.T) {
	withTunnel(t, func(t *testing.T, r *rig) {
		r.hello(t)
		ch := &channel{}
		r.conn.dial = func(context.Context, revtunnel.DialRequest) (ssh.Channel, error) { return ch, nil }
		session := &recorder{}
		sessionPID := r.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return session }))
		res, err := r.system.Root.RequestFuture(r.pid, &clusterpb.DialRequest{
			SessionId: "s1", Resource: "node1", User: "alice", ClientAddr: "10.1.1.1:5555", TimeoutMs: 3000,
			ReplyToAddress: sessionPID.Address, ReplyToId: sessionPID.Id,
		}, 5*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		resp := res.(*clusterpb.DialResponse)
		if !resp.Ok || resp.AgentId != "a1" || resp.PeerAddr != "127.0.0.1:7946" || r.parked.m[resp.Token] != ssh.Channel(ch) {
			t.Fatalf("response %+v", resp)
		}
		if d := r.conn.dials[0]; d.SessionID != "s1" || d.Resource != "node1" || d.User != "alice" || d.ClientAddr != "10.1.1.1:5555" {
			t.Errorf("dial request to the agent: %+v", d)
		}

		// The agent's login report goes to the session that dialed.
		r.h.Login(revtunnel.Login{SessionID: "s1", Login: "alice"})
		synctest.Wait()
		if n, rep := count[*clusterpb.LoginReport](session); n != 1 || rep.Login != "alice" {
			t.Errorf("session got %d reports, last %+v", n, rep)
		}
		// One for a session nobody answers for is audited by the tunnel.
		r.h.Login(revtunnel.Login{SessionID: "s2", Login: "bob", Refused: "not allowed"})
		synctest.Wait()
		if len(r.log.events) != 1 || r.log.events[0].SessionID != "s2" || r.log.events[0].Outcome != "refused" {
			t.Errorf("audit %+v", r.log.events)
		}
	})
}

func TestTunnelDialReportsTheAgentsRefusalAndItsSilence(t *testing.T) {
	withTunnel(t, func(t *testing.T, r *rig) {
		r.hello(t)
		r.conn.dial = func(context.Context, revtunnel.DialRequest) (ssh.Channel, error) {
			return nil, &revtunnel.DialError{Reason: "connect 10.0.0.5:5432: connection refused"}
		}
		res, _ := r.system.Root.RequestFuture(r.pid, &clusterpb.DialRequest{SessionId: "s1", TimeoutMs: 1000}, 5*time.Second).Result()
		if resp := res.(*clusterpb.DialResponse); resp.Ok || !resp.Refused || !strings.Contains(resp.Error, "connection refused") {
			t.Errorf("refusal: %+v", resp)
		}

		// A silent agent: the dial ends at the request's timeout.
		r.conn.dial = func(ctx context.Context, _ revtunnel.DialRequest) (ssh.Channel, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		start := time.Now()
		res, _ = r.system.Root.RequestFuture(r.pid, &clusterpb.DialRequest{SessionId: "s2", TimeoutMs: 1500}, 5*time.Second).Result()
		resp := res.(*clusterpb.DialResponse)
		if resp.Ok || resp.Refused || !strings.Contains(resp.Error, "agent a1 unreachable") {
			t.Errorf("silence: %+v", resp)
		}
		if d := time.Since(start); d != 1500*time.Millisecond {
			t.Errorf("answered after %s, want the request's timeout (1.5s)", d)
		}
		if len(r.parked.m) != 0 {
			t.Errorf("%d channels parked for failed dials", len(r.parked.m))
		}
	})
}

func TestTunnelClosesAfterMissedKeepalivesAndWithdrawsTheRoute(t *testing.T) {
	withTunnel(t, func(t *testing.T, r *rig) {
		r.hello(t)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n, rtt := count[*router.TunnelRTT](r.router); n < 2 || rtt.RTT != 5*time.Millisecond {
			t.Fatalf("%d RTT reports, last %+v: want one per answered keepalive", n, rtt)
		}
		// The agent goes silent: three keepalives of 2s each go
		// unanswered, then the tunnel closes.
		r.conn.answers.Store(false)
		silentSince := time.Now()
		<-r.conn.closed
		lost := time.Since(silentSince)
		if lost < 6*time.Second || lost > 8*time.Second {
			t.Errorf("closed %s after the agent went silent, want within interval×count (6s) plus one interval", lost)
		}
		<-r.stopped
		synctest.Wait()
		if n, down := count[*router.TunnelDown](r.router); n != 1 || down.AgentID != "a1" {
			t.Errorf("TunnelDown %d, %+v", n, down)
		}
	})
}

func TestTunnelSupersededClosesWithItsReason(t *testing.T) {
	withTunnel(t, func(t *testing.T, r *rig) {
		r.hello(t)
		r.system.Root.Send(r.pid, &router.Superseded{})
		<-r.stopped
		synctest.Wait()
		if _, down := count[*router.TunnelDown](r.router); down == nil || down.Reason != "agent connected again" {
			t.Errorf("TunnelDown %+v", down)
		}
		if !r.conn.isClosed() {
			t.Error("the connection is still open")
		}
	})
}

func TestTunnelHeartbeatsWaitForTheHello(t *testing.T) {
	withTunnel(t, func(t *testing.T, r *rig) {
		// Before the hello a heartbeat is answered but not passed on.
		if _, err := r.h.Heartbeat(revtunnel.Heartbeat{}); err != nil {
			t.Fatal(err)
		}
		if n, _ := count[*router.Heartbeat](r.router); n != 0 {
			t.Errorf("%d heartbeats reached the router before the hello", n)
		}
		r.hello(t)
		if _, err := r.h.Heartbeat(revtunnel.Heartbeat{}); err != nil {
			t.Fatal(err)
		}
		if n, hb := count[*router.Heartbeat](r.router); n != 1 || hb.AgentID != "a1" {
			t.Errorf("heartbeats %d, %+v", n, hb)
		}
	})
}

func TestTunnelConfigIsChecked(t *testing.T) {
	if _, err := NewProps(Config{}); err == nil {
		t.Error("an empty config was accepted")
	}
}
