package session

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/router"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/cluster/clusterpb"
	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/streams"
)

// These tests run the session's flow on fakes of its edges (dialers, the
// user's channel, the audit log) inside synctest bubbles: timeouts take no
// real time, and the clock readings they check are exact.

// dialFunc is how one fake agent answers a dial.
type dialFunc func(ctx context.Context) (streams.Stream, error)

// fakeDialer answers dials by agent id and records them in order.
type fakeDialer struct {
	mu     sync.Mutex
	agents map[string]dialFunc
	calls  []string
	reqs   []*clusterpb.DialRequest
}

func (d *fakeDialer) Dial(ctx context.Context, e router.Endpoint, req *clusterpb.DialRequest) (streams.Stream, error) {
	d.mu.Lock()
	d.calls = append(d.calls, e.AgentID)
	d.reqs = append(d.reqs, req)
	f := d.agents[e.AgentID]
	d.mu.Unlock()
	if f == nil {
		return nil, errors.New("no such agent")
	}
	return f(ctx)
}

func (d *fakeDialer) called() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// answer returns a dialFunc that connects after delay, giving the test the
// agent's end of the stream.
func answer(delay time.Duration, agentEnd chan<- net.Conn) dialFunc {
	return func(ctx context.Context) (streams.Stream, error) {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ours, theirs := net.Pipe()
		agentEnd <- theirs
		return ours, nil
	}
}

func refuse(reason string) dialFunc {
	return func(context.Context) (streams.Stream, error) { return nil, errors.New(reason) }
}

// silent never answers: the attempt's deadline ends it.
func silent(ctx context.Context) (streams.Stream, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// userChannel is the user's side: the session accepts or rejects it.
type userChannel struct {
	mu       sync.Mutex
	rejected string
	userEnd  net.Conn // the user's end once accepted
	accepted chan struct{}
}

func newUserChannel() *userChannel { return &userChannel{accepted: make(chan struct{})} }

func (c *userChannel) Accept() (ssh.Channel, <-chan *ssh.Request, error) {
	ours, theirs := net.Pipe()
	c.mu.Lock()
	c.userEnd = theirs
	c.mu.Unlock()
	close(c.accepted)
	reqs := make(chan *ssh.Request)
	close(reqs)
	return pipeChannel{ours}, reqs, nil
}

func (c *userChannel) Reject(_ ssh.RejectionReason, msg string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected = msg
	return nil
}

func (c *userChannel) ChannelType() string { return "direct-tcpip" }
func (c *userChannel) ExtraData() []byte   { return nil }

func (c *userChannel) rejection() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejected
}

// pipeChannel is an ssh.Channel over one end of a net.Pipe.
type pipeChannel struct{ net.Conn }

// CloseWrite closes the whole pipe: net.Pipe has no half-close.
func (c pipeChannel) CloseWrite() error { return c.Conn.Close() }
func (pipeChannel) SendRequest(string, bool, []byte) (bool, error) {
	return false, nil
}
func (pipeChannel) Stderr() io.ReadWriter { return nil }

// auditLog records events; failing makes every append fail.
type auditLog struct {
	mu      sync.Mutex
	events  []audit.Event
	failing bool
}

func (l *auditLog) Append(ev audit.Event) (audit.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing {
		return ev, errors.New("disk full")
	}
	l.events = append(l.events, ev)
	return ev, nil
}

func (l *auditLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, e.Type+":"+e.Outcome)
	}
	return out
}

func (l *auditLog) last() audit.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.events[len(l.events)-1]
}

// countingLoad is a Load that records failures and live sessions.
type countingLoad struct {
	mu     sync.Mutex
	live   map[string]int
	failed []string
}

func (l *countingLoad) Sessions(id string) int { l.mu.Lock(); defer l.mu.Unlock(); return l.live[id] }
func (l *countingLoad) Add(id string, d int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live == nil {
		l.live = map[string]int{}
	}
	l.live[id] += d
}
func (l *countingLoad) Failed(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed = append(l.failed, id)
}
func (l *countingLoad) Succeeded(string)             {}
func (l *countingLoad) RecentlyFailed(string) bool   { return false }
func (l *countingLoad) PeerRTT(string) time.Duration { return 0 }

// rig is one session under test with its fakes.
type rig struct {
	s           *Session
	local, peer *fakeDialer
	user        *userChannel
	log         *auditLog
	load        *countingLoad
	start       time.Time
	done        chan struct{} // closed when Run returns
}

// endpoint returns an online, healthy endpoint of resource "db".
func endpoint(agent, proxy string, local bool) router.Endpoint {
	return router.Endpoint{
		Resource: model.Resource{Name: "db", Kind: "tcp", AgentID: agent, ProxyID: proxy, Healthy: true},
		Online:   true, Local: local, Tunnel: nil, Region: "eu",
	}
}

func newRig(t *testing.T, pol *access.Policy, eps ...router.Endpoint) *rig {
	t.Helper()
	for i := range eps {
		if eps[i].Online {
			eps[i].Tunnel = newPID(eps[i].ProxyID, eps[i].AgentID)
		}
	}
	if pol == nil {
		pol = access.Empty
	}
	table := router.StaticTable(&router.Snapshot{Resources: map[string][]router.Endpoint{"db": eps}, Policy: pol})
	r := &rig{
		local: &fakeDialer{agents: map[string]dialFunc{}},
		peer:  &fakeDialer{agents: map[string]dialFunc{}},
		user:  newUserChannel(),
		log:   &auditLog{},
		load:  &countingLoad{},
		start: time.Now(),
	}
	s, err := New(Config{
		ID: "s1", ProxyID: "p1", User: "alice",
		Identity: access.Identity{User: "alice", Roles: []string{access.RoleAccess}, Logins: []string{"alice"}},
		Resource: "db", Channel: r.user, Table: table, Audit: r.log,
		Local: r.local, Peer: r.peer, Strategy: model.StrategyDefault, Region: "eu", Load: r.load,
		DialTimeout: 15 * time.Second, AttemptTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	return r
}

// run runs the session in the background; the returned channel closes
// when Run returns.
func (r *rig) run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	r.done = done
	go func() {
		defer close(done)
		r.s.Run(ctx)
	}()
	return done
}

// echoOnce reads one message at the agent's end and writes it back.
func echoOnce(t *testing.T, agent net.Conn) {
	t.Helper()
	buf := make([]byte, 64)
	n, err := agent.Read(buf)
	if err != nil {
		t.Errorf("agent read: %v", err)
		return
	}
	if _, err := agent.Write(buf[:n]); err != nil {
		t.Errorf("agent write: %v", err)
	}
}

// roundTrip sends ping from the user and expects it back.
func (r *rig) roundTrip(t *testing.T, agentEnd <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case <-r.user.accepted:
	case <-r.done:
		t.Fatalf("the session ended without accepting the user's channel: %q", r.user.rejection())
	}
	agent := <-agentEnd
	go echoOnce(t, agent)
	if _, err := r.user.userEnd.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r.user.userEnd, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("user read %q, %v", buf, err)
	}
	return agent
}

func TestSessionConnectsAuditsAndEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true))
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = answer(10*time.Millisecond, agentEnd)
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		if got := r.log.types(); !slices.Equal(got, []string{"session.start:started"}) {
			t.Fatalf("audit before the end: %v", got)
		}
		if r.load.Sessions("a1") != 1 {
			t.Errorf("live sessions on a1: %d, want 1", r.load.Sessions("a1"))
		}
		r.user.userEnd.Close()
		<-done
		agent.Close()
		end := r.log.last()
		if end.Type != "session.end" || end.Outcome != "ok" || end.BytesIn != 4 || end.BytesOut != 4 || end.AgentID != "a1" || end.Path != "p1>a1" {
			t.Errorf("end record: %+v", end)
		}
		if r.load.Sessions("a1") != 0 {
			t.Errorf("live sessions on a1 after the end: %d", r.load.Sessions("a1"))
		}
		req := r.local.reqs[0]
		if req.SessionId != "s1" || req.Resource != "db" || req.User != "alice" || req.EntryProxy != "p1" {
			t.Errorf("dial request: %+v", req)
		}
	})
}

func TestSessionFailsOverToTheNextAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true), endpoint("a2", "p1", true))
		agentEnd := make(chan net.Conn, 1)
		// Whichever comes first refuses; the other serves.
		first := ""
		r.local.agents["a1"] = func(ctx context.Context) (streams.Stream, error) {
			if first == "" {
				first = "a1"
				return nil, errors.New("upstream down")
			}
			return answer(0, agentEnd)(ctx)
		}
		r.local.agents["a2"] = func(ctx context.Context) (streams.Stream, error) {
			if first == "" {
				first = "a2"
				return nil, errors.New("upstream down")
			}
			return answer(0, agentEnd)(ctx)
		}
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		r.user.userEnd.Close()
		<-done
		agent.Close()
		calls := r.local.called()
		if len(calls) != 2 || calls[0] == calls[1] {
			t.Fatalf("dials %v, want both agents once", calls)
		}
		if !slices.Equal(r.load.failed, []string{first}) {
			t.Errorf("failed agents %v, want [%s]", r.load.failed, first)
		}
		if end := r.log.last(); end.Outcome != "ok" || end.AgentID != calls[1] {
			t.Errorf("end record: %+v", end)
		}
		if time.Since(r.start) != 0 {
			t.Errorf("a refusal took %s: failover must not wait", time.Since(r.start))
		}
	})
}

func TestSilentAgentTimesOutAndTheNextGetsItsFullAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Peer endpoints come after local ones: a1 (local) first.
		r := newRig(t, nil, endpoint("a1", "p1", true), endpoint("a2", "p2", false))
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = silent
		// a2 answers just before its own attempt's deadline: an earlier
		// attempt's timer must not cut it short.
		r.peer.agents["a2"] = answer(2900*time.Millisecond, agentEnd)
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		if got := time.Since(r.start); got != 5900*time.Millisecond {
			t.Errorf("connected after %s, want 3s (a1's attempt) + 2.9s", got)
		}
		r.user.userEnd.Close()
		<-done
		agent.Close()
		end := r.log.last()
		if end.Outcome != "ok" || end.Path != "p1>p2>a2" {
			t.Errorf("end record: %+v", end)
		}
	})
}

func TestDialTimeoutBoundsEveryAttemptTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var eps []router.Endpoint
		for _, id := range []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7"} {
			eps = append(eps, endpoint(id, "p1", true))
		}
		r := newRig(t, nil, eps...)
		for _, e := range eps {
			r.local.agents[e.AgentID] = silent
		}
		<-r.run(t.Context())
		if got := time.Since(r.start); got != 15*time.Second {
			t.Errorf("refused after %s, want session.dial_timeout (15s)", got)
		}
		if n := len(r.local.called()); n != 5 {
			t.Errorf("%d attempts, want 5 (3s each within 15s)", n)
		}
		msg := r.user.rejection()
		if !strings.Contains(msg, `cannot connect to "db"`) || !strings.Contains(msg, "did not answer in time") {
			t.Errorf("rejection %q", msg)
		}
		if got := r.log.types(); !slices.Equal(got, []string{"session.refused:refused"}) {
			t.Errorf("audit %v", got)
		}
	})
}

func TestDeniedSessionDialsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true))
		r.s.cfg.Identity.Roles = nil // no role: nothing is allowed
		r.local.agents["a1"] = refuse("must not be dialed")
		<-r.run(t.Context())
		if n := len(r.local.called()); n != 0 {
			t.Errorf("%d dials for a denied session", n)
		}
		if got := r.log.types(); !slices.Equal(got, []string{"session.denied:denied"}) {
			t.Errorf("audit %v", got)
		}
		if msg := r.user.rejection(); !strings.HasPrefix(msg, "warren: ") || msg == "warren: " {
			t.Errorf("rejection %q", msg)
		}
	})
}

func TestUnknownAndUnusableResourcesAreRefusedWithTheReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil)
		r.s.cfg.ListHint = "; list resources with `warren ls`"
		<-r.run(t.Context())
		if msg := r.user.rejection(); msg != "warren: unknown resource \"db\"; list resources with `warren ls`" {
			t.Errorf("unknown: %q", msg)
		}

		sick := endpoint("a1", "p1", true)
		sick.Healthy, sick.Detail = false, "connection refused by 10.0.0.5:5432"
		r = newRig(t, nil, sick)
		<-r.run(t.Context())
		if msg := r.user.rejection(); !strings.Contains(msg, "unhealthy: connection refused by 10.0.0.5:5432") {
			t.Errorf("unhealthy: %q", msg)
		}
		if n := len(r.local.called()); n != 0 {
			t.Errorf("%d dials to an unhealthy resource", n)
		}
	})
}

func TestAuditFailureRefusesTheSessionAndClosesTheAgentsStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true))
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = answer(0, agentEnd)
		r.log.failing = true
		<-r.run(t.Context())
		if msg := r.user.rejection(); !strings.Contains(msg, "cannot write its audit log") {
			t.Errorf("rejection %q", msg)
		}
		agent := <-agentEnd
		if _, err := agent.Read(make([]byte, 1)); err == nil {
			t.Error("the agent's stream is still open")
		}
		if r.load.Sessions("a1") != 0 {
			t.Errorf("live sessions on a1: %d", r.load.Sessions("a1"))
		}
	})
}

func TestNodesLoginReportIsAuditedAndARefusalEndsAsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := endpoint("a1", "p1", true)
		e.Kind = "ssh"
		r := newRig(t, nil, e)
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = answer(0, agentEnd)
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		r.s.Report(&clusterpb.LoginReport{SessionId: "other", Login: "root"}) // not ours: ignored
		r.s.Report(&clusterpb.LoginReport{SessionId: "s1", Login: "ubuntu", Refused: `login "ubuntu" is not in your certificate`})
		synctest.Wait()
		r.user.userEnd.Close()
		<-done
		agent.Close()
		got := r.log.types()
		want := []string{"session.start:started", "session.login:refused", "session.end:refused"}
		if !slices.Equal(got, want) {
			t.Fatalf("audit %v, want %v", got, want)
		}
		if end := r.log.last(); end.Login != "ubuntu" || !strings.Contains(end.Error, "login refused by the node") {
			t.Errorf("end record: %+v", end)
		}
		if time.Since(r.start) != 0 {
			t.Errorf("the end waited %s although the report had come", time.Since(r.start))
		}
	})
}

func TestSSHSessionWaitsAMomentForALateLoginReport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := endpoint("a1", "p1", true)
		e.Kind = "ssh"
		r := newRig(t, nil, e)
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = answer(0, agentEnd)
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		r.user.userEnd.Close()
		agent.Close()
		time.Sleep(500 * time.Millisecond) // the report travels apart from the close
		r.s.Report(&clusterpb.LoginReport{SessionId: "s1", Login: "alice"})
		<-done
		if end := r.log.last(); end.Type != "session.end" || end.Outcome != "ok" || end.Login != "alice" {
			t.Errorf("end record: %+v", end)
		}
		if got := time.Since(r.start); got != 500*time.Millisecond {
			t.Errorf("ended after %s, want as soon as the report came (500ms)", got)
		}

		// No report at all: the end is recorded after loginReportWait.
		r = newRig(t, nil, e)
		r.local.agents["a1"] = answer(0, agentEnd)
		done = r.run(t.Context())
		agent = r.roundTrip(t, agentEnd)
		r.user.userEnd.Close()
		agent.Close()
		<-done
		if got := time.Since(r.start); got != loginReportWait {
			t.Errorf("ended after %s, want loginReportWait (%s)", got, loginReportWait)
		}
	})
}

func TestCancellingEndsARunningSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true))
		agentEnd := make(chan net.Conn, 1)
		r.local.agents["a1"] = answer(0, agentEnd)
		ctx, cancel := context.WithCancel(t.Context())
		done := r.run(ctx)
		agent := r.roundTrip(t, agentEnd)
		cancel()
		<-done
		if _, err := agent.Read(make([]byte, 1)); err == nil {
			t.Error("the agent's stream is still open")
		}
		if end := r.log.last(); end.Outcome != "error" || !strings.Contains(end.Error, "shutting down") {
			t.Errorf("end record: %+v", end)
		}
	})
}

func TestStickyAgentComesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil, endpoint("a1", "p1", true), endpoint("a2", "p1", true), endpoint("a3", "p1", true))
		sticky := &stickyMap{m: map[string]string{"db": "a3"}}
		r.s.cfg.Sticky = sticky
		agentEnd := make(chan net.Conn, 1)
		for _, id := range []string{"a1", "a2", "a3"} {
			r.local.agents[id] = answer(0, agentEnd)
		}
		done := r.run(t.Context())
		agent := r.roundTrip(t, agentEnd)
		r.user.userEnd.Close()
		<-done
		agent.Close()
		if calls := r.local.called(); !slices.Equal(calls, []string{"a3"}) {
			t.Errorf("dials %v, want the sticky agent a3 only", calls)
		}
	})
}

func newPID(proxy, agent string) *actor.PID { return actor.NewPID(proxy+":8443", "tunnel/"+agent) }

type stickyMap struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *stickyMap) StickyAgent(r string) string { s.mu.Lock(); defer s.mu.Unlock(); return s.m[r] }
func (s *stickyMap) SetStickyAgent(r, a string)  { s.mu.Lock(); defer s.mu.Unlock(); s.m[r] = a }
