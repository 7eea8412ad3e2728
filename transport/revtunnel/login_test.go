package revtunnel

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
)

// rawAgent opens an agent tunnel to p without saying hello and serves the
// proxy side with h. The returned ClientConn does not answer the proxy's
// requests (they are discarded). Both ends are closed at cleanup.
func rawAgent(t *testing.T, p *proxy, signer ssh.Signer, id string, trust Trust, h Handler) (*ClientConn, *ServerConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conn, err := dialSSH(ctx, p.addr, &ssh.ClientConfig{
		User: id, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: trust.hostKeyCallback(nil),
	})
	if err != nil {
		t.Fatalf("dial %s: %v", p.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	go ssh.DiscardRequests(conn.reqs)
	var sc *ServerConn
	select {
	case sc = <-p.conns:
	case err := <-p.errs:
		t.Fatalf("proxy handshake failed: %v", err)
	case <-ctx.Done():
		t.Fatal("no tunnel reached the proxy")
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = sc.Serve(h)
	}()
	t.Cleanup(func() {
		sc.Close()
		select {
		case <-served:
		case <-time.After(waitFor):
			t.Error("Serve did not return after Close")
		}
	})
	return &ClientConn{Addr: p.addr, conn: conn}, sc
}

// dialSession has the proxy dial session id through sc and the agent c
// accept it, and returns once the proxy's Dial has returned: from then
// on the proxy expects the session's login report.
func dialSession(t *testing.T, ctx context.Context, c *ClientConn, sc *ServerConn, id string) {
	t.Helper()
	type opened struct {
		ch  ssh.Channel
		err error
	}
	done := make(chan opened, 1)
	go func() {
		ch, err := sc.Dial(ctx, DialRequest{SessionID: id, Resource: "node-1", User: "alice"})
		done <- opened{ch, err}
	}()
	req, nch, err := c.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if req.SessionID != id {
		t.Fatalf("agent got session %q, want %q", req.SessionID, id)
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		t.Fatalf("accept channel: %v", err)
	}
	go ssh.DiscardRequests(reqs)
	t.Cleanup(func() { ch.Close() })
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("Dial %s: %v", id, o.err)
		}
		t.Cleanup(func() { o.ch.Close() })
	case <-ctx.Done():
		t.Fatalf("Dial %s did not return", id)
	}
}

// barrier returns once the proxy has handled every request c sent before
// it: requests are handled in order, and an unknown one is answered
// without reaching the handler.
func barrier(t *testing.T, ctx context.Context, c *ClientConn) {
	t.Helper()
	if _, _, err := sendRequest(ctx, c.conn, "barrier@test.warren.dev", nil); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}

func (c *ServerConn) droppedLogins() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

func sendLogin(t *testing.T, c *ClientConn, payload []byte) {
	t.Helper()
	if _, _, err := c.conn.SendRequest(ReqLogin, false, payload); err != nil {
		t.Fatalf("send login report: %v", err)
	}
}

// padded is a login report that is valid but for an unknown field that
// makes it n bytes long.
func padded(l Login, n int) []byte {
	b := encode(l)
	pad := n - len(b) - len(`,"pad":""`)
	return append(b[:len(b)-1], fmt.Sprintf(`,"pad":%q}`, strings.Repeat("x", pad))...)
}

// TestLogin walks one tunnel through the rules for login reports: after
// the hello, only for a session this tunnel dialed, once, small and valid.
// Each refused report is for a session that a valid report then shows
// was still expected, so the rule at hand is what refused it.
func TestLogin(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &recHandler{}
	c, sc := rawAgent(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	s1 := Login{SessionID: "s1", Login: "ubuntu", KeyID: "alice"}
	s2 := Login{SessionID: "s2", Login: "root"}
	if n := len(padded(s2, MaxLoginPayload)); n != MaxLoginPayload {
		t.Fatalf("padded: got %d bytes, want %d", n, MaxLoginPayload)
	}
	steps := []struct {
		name        string
		do          func(t *testing.T)
		wantLogins  []Login // delivered so far
		wantDropped int     // dropped so far
	}{
		{"dialed before hello", func(t *testing.T) { dialSession(t, ctx, c, sc, "s1") }, nil, 0},
		{"report before hello: dropped", func(t *testing.T) { sendLogin(t, c, encode(s1)) }, nil, 1},
		{"hello", func(t *testing.T) {
			ok, _, err := sendRequest(ctx, c.conn, ReqHello, encode(Hello{Version: "test"}))
			if err != nil || !ok {
				t.Fatalf("hello: got %v, %v; want accepted", ok, err)
			}
		}, nil, 1},
		{"session never dialed: dropped", func(t *testing.T) { sendLogin(t, c, encode(Login{SessionID: "s9", Login: "root"})) }, nil, 2},
		{"dialed session: delivered", func(t *testing.T) { sendLogin(t, c, encode(s1)) }, []Login{s1}, 2},
		{"second report for it: dropped", func(t *testing.T) { sendLogin(t, c, encode(s1)) }, []Login{s1}, 3},
		{"dial s2", func(t *testing.T) { dialSession(t, ctx, c, sc, "s2") }, []Login{s1}, 3},
		{"oversized: dropped", func(t *testing.T) { sendLogin(t, c, padded(s2, MaxLoginPayload+1)) }, []Login{s1}, 4},
		{"invalid login: dropped", func(t *testing.T) { sendLogin(t, c, encode(Login{SessionID: "s2", Login: "root; rm"})) }, []Login{s1}, 5},
		{"invalid key id: dropped", func(t *testing.T) { sendLogin(t, c, encode(Login{SessionID: "s2", Login: "root", KeyID: "a\nb"})) }, []Login{s1}, 6},
		{"malformed: dropped", func(t *testing.T) { sendLogin(t, c, []byte(`{"session_id":"s2",`)) }, []Login{s1}, 7},
		{"at the size limit: delivered", func(t *testing.T) { sendLogin(t, c, padded(s2, MaxLoginPayload)) }, []Login{s1, s2}, 7},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			barrier(t, ctx, c)
			if got := h.loginsSeen(); fmt.Sprint(got) != fmt.Sprint(st.wantLogins) {
				t.Errorf("handler got logins %+v, want %+v", got, st.wantLogins)
			}
			if got := sc.droppedLogins(); got != st.wantDropped {
				t.Errorf("got %d login reports dropped, want %d", got, st.wantDropped)
			}
		})
	}
}

// countHandler is a slog.Handler that counts records.
type countHandler struct{ n *atomic.Int32 }

func (h countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h countHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h countHandler) WithGroup(string) slog.Handler             { return h }

// TestLoginFlood: an agent sending garbage login reports by the thousand
// reaches neither the handler nor the log, and its tunnel keeps working.
func TestLoginFlood(t *testing.T) {
	a := newAuthority(t)
	cfg := baseServerConfig(t, a)
	var logged atomic.Int32
	cfg.Logger = slog.New(countHandler{&logged})
	p := startProxy(t, cfg)
	h := &recHandler{}
	c, sc, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h, Hello{Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	dialSession(t, ctx, c, sc, "real")
	logsBefore := logged.Load()

	const n = 10000
	big := padded(Login{SessionID: "real", Login: "root"}, MaxLoginPayload+1)
	garbage := []func(i int) []byte{
		func(i int) []byte { return encode(Login{SessionID: fmt.Sprintf("s-%d", i), Login: "root"}) }, // never dialed
		func(i int) []byte { return []byte(fmt.Sprintf(`{"session_id":%d`, i)) },                      // malformed
		func(int) []byte { return big },                                                  // oversized, for the dialed session
		func(int) []byte { return encode(Login{SessionID: "real", Login: ""}) },          // invalid, for the dialed session
		func(int) []byte { return nil },                                                  // empty
		func(int) []byte { return encode(Login{SessionID: "real/../x", Login: "root"}) }, // invalid session id
	}
	for i := range n {
		sendLogin(t, c, garbage[i%len(garbage)](i))
	}
	// The heartbeat is handled after every report: the tunnel still works.
	if _, err := c.Heartbeat(ctx, Heartbeat{Resources: []ResourceStatus{{Name: "web", Kind: model.KindTCP}}}); err != nil {
		t.Fatalf("heartbeat after %d garbage login reports: %v", n, err)
	}
	if got := h.loginsSeen(); len(got) != 0 {
		t.Errorf("handler got %d logins from garbage (first %+v), want none", len(got), got[0])
	}
	if got := sc.droppedLogins(); got != n {
		t.Errorf("got %d login reports dropped, want %d", got, n)
	}
	if got := logged.Load() - logsBefore; got != 0 {
		t.Errorf("got %d log records for the garbage, want none while the tunnel is open", got)
	}
	// The dialed session's real report still gets through.
	want := Login{SessionID: "real", Login: "ubuntu", KeyID: "alice"}
	if err := c.ReportLogin(want); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Heartbeat(ctx, Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	if got := h.loginsSeen(); len(got) != 1 || got[0] != want {
		t.Errorf("handler got logins %+v, want [%+v]", got, want)
	}
}

// TestPendingLoginsBounded: a tunnel remembers at most maxPendingLogins
// dialed sessions, forgetting the oldest, and each one once.
func TestPendingLoginsBounded(t *testing.T) {
	c := &ServerConn{dialed: map[string]bool{}}
	for i := range maxPendingLogins + 1 {
		c.expectLogin(fmt.Sprintf("s%d", i))
	}
	if got := len(c.dialed); got != maxPendingLogins {
		t.Errorf("got %d sessions remembered, want %d", got, maxPendingLogins)
	}
	tests := []struct {
		session string
		want    bool
	}{
		{"s0", false}, // the oldest, forgotten
		{"s1", true},
		{"s1", false}, // once only
		{fmt.Sprintf("s%d", maxPendingLogins), true},
		{"never", false},
	}
	for _, tt := range tests {
		if got := c.takeLogin(tt.session); got != tt.want {
			t.Errorf("takeLogin(%s): got %v, want %v", tt.session, got, tt.want)
		}
	}
	if len(c.dialed) != len(c.order) {
		t.Errorf("got %d sessions and %d in order, want the same", len(c.dialed), len(c.order))
	}
}
