package revtunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
	"github.com/warren-proxy/warren/internal/slowlink"
	"github.com/warren-proxy/warren/transport/pki"
)

// waitFor bounds every wait in these tests, so a bug fails a test instead
// of hanging it.
const waitFor = 10 * time.Second

const goodToken = "good-join-token"

// proxyID is the id in the test proxies' certificates, which their hello
// replies must repeat.
const proxyID = "proxy-1"

func newAuthority(t *testing.T) *pki.Authority {
	t.Helper()
	a, err := pki.Init(filepath.Join(t.TempDir(), "pki"), pki.InitOptions{})
	if err != nil {
		t.Fatalf("pki.Init: %v", err)
	}
	return a
}

func newKey(t testing.TB) ssh.Signer {
	t.Helper()
	s, _, err := pki.GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return s
}

// hostSigner returns a new key holding a proxy's host certificate for id
// from a's host CA, issued at now (zero: the current time).
func hostSigner(t *testing.T, a *pki.Authority, id string, now time.Time) ssh.Signer {
	t.Helper()
	key := newKey(t)
	cert, err := a.IssueHostCert(key.PublicKey(), pki.HostCertRequest{ID: id, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatalf("IssueHostCert: %v", err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatalf("NewCertSigner: %v", err)
	}
	return s
}

// proxy is a Server on a real listener. Every tunnel it accepts is sent
// on conns; every failed handshake on errs.
type proxy struct {
	addr  string
	conns chan *ServerConn
	errs  chan error
	joins atomic.Int32
	// tokenChecks counts the calls of CheckJoinToken.
	tokenChecks atomic.Int32
}

// takenName is a resource name the test proxies' Join refuses to grant.
const takenName = "taken"

// baseServerConfig is a proxy of a's cluster: its certificate from the
// host CA, agents' certificates issued by Join from the agent CA.
func baseServerConfig(t *testing.T, a *pki.Authority) ServerConfig {
	return ServerConfig{
		HostSigner:     hostSigner(t, a, proxyID, time.Time{}),
		AgentCA:        a.AgentCA.PublicKey(),
		CheckJoinToken: func(tok string) bool { return tok == goodToken },
		Join: func(req JoinRequest, token string, _ net.Addr) (JoinResponse, error) {
			if token != goodToken {
				return JoinResponse{}, fmt.Errorf("Join called with token %q, want the one CheckJoinToken accepted", token)
			}
			if req.Name == "refused" {
				return JoinResponse{}, errors.New("agent name refused is taken")
			}
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.PublicKey))
			if err != nil {
				return JoinResponse{}, fmt.Errorf("public key: %w", err)
			}
			var granted []string
			var refused []Refused
			for _, n := range req.Principals {
				if n == takenName {
					refused = append(refused, Refused{Name: n, Reason: "already another agent's"})
					continue
				}
				granted = append(granted, n)
			}
			cert, err := a.IssueAgentCert(pub, pki.AgentCertRequest{ID: req.Name, Names: granted, TTL: time.Hour})
			if err != nil {
				return JoinResponse{}, err
			}
			return JoinResponse{
				AgentID:  req.Name,
				HostCert: string(ssh.MarshalAuthorizedKey(cert)),
				UserCA:   string(ssh.MarshalAuthorizedKey(a.UserCA.PublicKey())),
				Refused:  refused,
			}, nil
		},
		HandshakeTimeout: 5 * time.Second,
	}
}

func startProxy(t *testing.T, cfg ServerConfig) *proxy {
	t.Helper()
	p := &proxy{conns: make(chan *ServerConn, 8), errs: make(chan error, 8)}
	join := cfg.Join
	cfg.Join = func(req JoinRequest, token string, remote net.Addr) (JoinResponse, error) {
		p.joins.Add(1)
		return join(req, token, remote)
	}
	check := cfg.CheckJoinToken
	cfg.CheckJoinToken = func(tok string) bool {
		p.tokenChecks.Add(1)
		return check(tok)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc, err := srv.Handshake(ctx, nc)
				if err != nil {
					if !errors.Is(err, ErrJoined) {
						select {
						case p.errs <- err:
						default:
						}
					}
					return
				}
				select {
				case p.conns <- sc:
				case <-ctx.Done():
					sc.Close()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
		for {
			select {
			case sc := <-p.conns:
				sc.Close()
			default:
				return
			}
		}
	})
	return p
}

// recHandler records what the agent sends. Its hello reply is reply,
// with ProxyID proxyID if reply names none and is no refusal (Dial
// requires the proxy id of the certificate).
type recHandler struct {
	reply HelloReply
	renew RenewReply

	mu      sync.Mutex // guards the fields below
	hbErr   error
	hbReply HeartbeatReply
	hellos  []Hello
	hbs     []Heartbeat
	logins  []Login
	renews  int
}

func (h *recHandler) Hello(hello Hello) HelloReply {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hellos = append(h.hellos, hello)
	r := h.reply
	if r.ProxyID == "" && r.Error == "" {
		r.ProxyID = proxyID
	}
	return r
}

func (h *recHandler) Heartbeat(hb Heartbeat) (HeartbeatReply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hbs = append(h.hbs, hb)
	return h.hbReply, h.hbErr
}

func (h *recHandler) Login(l Login) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logins = append(h.logins, l)
}

func (h *recHandler) Renew() RenewReply {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.renews++
	return h.renew
}

func (h *recHandler) loginsSeen() []Login {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Login(nil), h.logins...)
}

func (h *recHandler) renewCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.renews
}

func (h *recHandler) heartbeats() []Heartbeat {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Heartbeat(nil), h.hbs...)
}

// tunnel dials p as agent id with the given trust, serves the proxy side
// with h, and returns both ends. Both are closed at cleanup.
func tunnel(t *testing.T, p *proxy, signer ssh.Signer, id string, trust Trust, h Handler, hello Hello) (*ClientConn, *ServerConn, HelloReply) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	type dialed struct {
		c     *ClientConn
		reply HelloReply
		err   error
	}
	done := make(chan dialed, 1)
	go func() {
		c, reply, err := Dial(ctx, ClientConfig{Addr: p.addr, AgentID: id, Signer: signer, Trust: trust}, hello)
		done <- dialed{c, reply, err}
	}()
	var sc *ServerConn
	select {
	case sc = <-p.conns:
	case d := <-done:
		t.Fatalf("Dial returned before the proxy accepted a tunnel: %v", d.err)
	case err := <-p.errs:
		t.Fatalf("proxy handshake failed: %v", err)
	case <-ctx.Done():
		t.Fatal("no tunnel reached the proxy")
	}
	served := make(chan error, 1)
	go func() { served <- sc.Serve(h) }()
	t.Cleanup(func() {
		sc.Close()
		select {
		case <-served:
		case <-time.After(waitFor):
			t.Error("Serve did not return after Close")
		}
	})
	d := <-done
	if d.err != nil {
		t.Fatalf("Dial: %v", d.err)
	}
	t.Cleanup(func() { d.c.Close() })
	return d.c, sc, d.reply
}

// agentSigner returns a new key holding an agent certificate for id, with
// names as more principals, from a's agent CA.
func agentSigner(t *testing.T, a *pki.Authority, id string, names ...string) ssh.Signer {
	t.Helper()
	return agentSignerAt(t, a, id, time.Time{}, names...)
}

// agentSignerAt is agentSigner for a certificate issued at now (valid for
// an hour).
func agentSignerAt(t *testing.T, a *pki.Authority, id string, now time.Time, names ...string) ssh.Signer {
	t.Helper()
	key := newKey(t)
	cert, err := a.IssueAgentCert(key.PublicKey(), pki.AgentCertRequest{ID: id, Names: names, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatalf("IssueAgentCert: %v", err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatalf("NewCertSigner: %v", err)
	}
	return s
}

func TestJoin(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	hostCA := a.HostCA.PublicKey()

	tests := []struct {
		name  string
		trust Trust
	}{
		{"trust on first use", Trust{}},
		{"pinned CA", Trust{Pin: ssh.FingerprintSHA256(hostCA)}},
		{"known CA", Trust{CA: hostCA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			key := newKey(t)
			req := JoinRequest{Name: "agent-1", PublicKey: string(ssh.MarshalAuthorizedKey(key.PublicKey())), Principals: []string{"web", takenName}}
			resp, ca, err := Join(ctx, p.addr, goodToken, req, tt.trust)
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			if resp.AgentID != "agent-1" {
				t.Errorf("got agent id %q, want agent-1", resp.AgentID)
			}
			if ca == nil || !bytes.Equal(ca.Marshal(), hostCA.Marshal()) {
				t.Errorf("got CA %v, want the cluster host CA", ca)
			}
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.HostCert))
			if err != nil {
				t.Fatalf("parse host cert: %v", err)
			}
			cert, ok := pub.(*ssh.Certificate)
			if !ok || cert.CertType != ssh.HostCert || !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()) {
				t.Fatalf("got %T %v, want a host certificate for the agent's key", pub, pub)
			}
			if got, want := strings.Join(cert.ValidPrincipals, ","), "agent/agent-1,web"; got != want {
				t.Errorf("got principals %q, want %q", got, want)
			}
			if _, err := pki.CheckAgentCert(a.AgentCA.PublicKey(), cert, "agent-1", time.Time{}); err != nil {
				t.Errorf("the joined agent's certificate: %v, want one from the agent CA", err)
			}
			if want := []Refused{{Name: takenName, Reason: "already another agent's"}}; fmt.Sprint(resp.Refused) != fmt.Sprint(want) {
				t.Errorf("got refused %+v, want %+v", resp.Refused, want)
			}
			if resp.UserCA == "" {
				t.Error("got no user CA in the join response")
			}
		})
	}
}

func TestJoinRefused(t *testing.T) {
	a := newAuthority(t)
	other := newAuthority(t)
	hostCA := a.HostCA.PublicKey()
	p := startProxy(t, baseServerConfig(t, a))

	plainCfg := baseServerConfig(t, a)
	plainCfg.HostSigner = newKey(t) // a plain host key, no certificate
	plain := startProxy(t, plainCfg)

	expiredCfg := baseServerConfig(t, a)
	expiredCfg.HostSigner = hostSigner(t, a, "proxy-1", time.Now().Add(-3*time.Hour))
	expired := startProxy(t, expiredCfg)

	tests := []struct {
		name        string
		addr        string
		token       string
		agent       string
		trust       Trust
		wantRefused bool   // errors.Is(err, ErrJoinRefused)
		want        string // in the message
		wantNoJoin  *proxy // this proxy's Join must not have been called
	}{
		{name: "wrong token", addr: p.addr, token: "wrong", agent: "a1", wantRefused: true, want: "join_token"},
		{name: "empty token", addr: p.addr, token: "", agent: "a1", wantRefused: true},
		{name: "pin mismatch", addr: p.addr, token: goodToken, agent: "a1", trust: Trust{Pin: ssh.FingerprintSHA256(other.HostCA.PublicKey())}, want: "does not match ca_pin", wantNoJoin: p},
		{name: "CA of another cluster", addr: p.addr, token: goodToken, agent: "a1", trust: Trust{CA: other.HostCA.PublicKey()}, want: "not signed by the cluster host CA", wantNoJoin: p},
		{name: "plain host key", addr: plain.addr, token: goodToken, agent: "a1", want: "plain host key", wantNoJoin: plain},
		{name: "expired host certificate", addr: expired.addr, token: goodToken, agent: "a1", trust: Trust{CA: hostCA}, want: "host certificate", wantNoJoin: expired},
		{name: "proxy refuses the join", addr: p.addr, token: goodToken, agent: "refused", wantRefused: true, want: "agent name refused is taken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			var before int32
			if tt.wantNoJoin != nil {
				before = tt.wantNoJoin.joins.Load()
			}
			key := newKey(t)
			req := JoinRequest{Name: tt.agent, PublicKey: string(ssh.MarshalAuthorizedKey(key.PublicKey()))}
			_, ca, err := Join(ctx, tt.addr, tt.token, req, tt.trust)
			if err == nil {
				t.Fatal("Join: got nil error, want a refusal")
			}
			if ca != nil {
				t.Errorf("got CA %v with an error, want none", ca)
			}
			if got := errors.Is(err, ErrJoinRefused); got != tt.wantRefused {
				t.Errorf("errors.Is(%v, ErrJoinRefused) = %v, want %v", err, got, tt.wantRefused)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to hold %q", err, tt.want)
			}
			if tt.wantNoJoin != nil {
				if got := tt.wantNoJoin.joins.Load(); got != before {
					t.Errorf("the proxy served %d joins to an agent that should not trust it, want 0", got-before)
				}
			}
		})
	}
}

func TestTunnelAuthRefused(t *testing.T) {
	a := newAuthority(t)
	other := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))

	userKey := newKey(t)
	userCert, err := a.IssueUserCert(userKey.PublicKey(), pki.UserCertRequest{User: "agent-1", Logins: []string{"agent-1"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	userSigner, err := ssh.NewCertSigner(userCert, userKey)
	if err != nil {
		t.Fatal(err)
	}

	// A proxy-style certificate: from the host CA, for the agent's id and
	// even its agent principal. Only the agent CA makes agents.
	proxyKey := newKey(t)
	proxyCert, err := a.IssueHostCert(proxyKey.PublicKey(), pki.HostCertRequest{ID: "agent-1", Principals: []string{pki.AgentPrincipal("agent-1")}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	proxyStyle, err := ssh.NewCertSigner(proxyCert, proxyKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		id     string
		signer ssh.Signer
	}{
		{"certificate for another agent", "agent-1", agentSigner(t, a, "agent-2")},
		{"another agent's certificate naming this id as a resource", "agent-1", agentSigner(t, a, "agent-2", "agent-1")},
		{"certificate from another cluster's agent CA", "agent-1", agentSigner(t, other, "agent-1")},
		{"certificate from the host CA (a proxy's)", "agent-1", proxyStyle},
		{"a proxy's own certificate", proxyID, hostSigner(t, a, proxyID, time.Time{})},
		{"expired certificate", "agent-1", agentSignerAt(t, a, "agent-1", time.Now().Add(-3*time.Hour))},
		{"plain key", "agent-1", newKey(t)},
		{"user certificate", "agent-1", userSigner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			c, _, err := Dial(ctx, ClientConfig{Addr: p.addr, AgentID: tt.id, Signer: tt.signer, Trust: Trust{CA: a.HostCA.PublicKey()}}, Hello{Version: "test"})
			if err == nil {
				c.Close()
				t.Fatal("Dial: got a tunnel, want a refusal")
			}
			if !strings.Contains(err.Error(), "refused this agent's certificate") {
				t.Errorf("got %q, want the certificate refusal", err)
			}
			select {
			case sc := <-p.conns:
				sc.Close()
				t.Errorf("the proxy accepted a tunnel for %s", sc.AgentID)
			default:
			}
		})
	}
}

func TestHelloRoundTrip(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	want := HelloReply{
		ProxyID: "proxy-1", Region: "eu", HostCert: "renewed",
		Proxies: []ProxyInfo{{ID: "proxy-1", Region: "eu", Zone: "a", TunnelAddr: p.addr}, {ID: "proxy-2", TunnelAddr: "10.0.0.2:3024"}},
	}
	h := &recHandler{reply: want}
	hello := Hello{Version: "1.2.3", Hostname: "node-1", Principals: []string{"web", "db"}}
	_, sc, got := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h, hello)

	if sc.AgentID != "agent-1" || sc.Cert == nil || sc.Cert.KeyId != "agent-1" {
		t.Errorf("got server conn agent %q cert %v, want agent-1 with its certificate", sc.AgentID, sc.Cert)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got hello reply %+v, want %+v", got, want)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.hellos) != 1 || fmt.Sprint(h.hellos[0]) != fmt.Sprint(hello) {
		t.Errorf("handler got hellos %+v, want one %+v", h.hellos, hello)
	}
}

func TestHelloRefused(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &recHandler{reply: HelloReply{Error: "agent version 0.1 is too old"}}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		c, _, err := Dial(ctx, ClientConfig{Addr: p.addr, AgentID: "agent-1", Signer: agentSigner(t, a, "agent-1"), Trust: Trust{CA: a.HostCA.PublicKey()}}, Hello{Version: "0.1"})
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	select {
	case sc := <-p.conns:
		defer sc.Close()
		go sc.Serve(h)
	case <-ctx.Done():
		t.Fatal("no tunnel reached the proxy")
	}
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "agent version 0.1 is too old") {
		t.Errorf("got %v, want a hello refusal with the proxy's reason", err)
	}
}

// quoted is s as it appears inside a model.Quote'd message: the client
// quotes the proxy's refusals, escaping their quotes.
func quoted(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func TestHeartbeat(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &recHandler{}
	c, _, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h, Hello{Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	good := Heartbeat{Seq: 7, Resources: []ResourceStatus{
		{Name: "web", Kind: model.KindTCP, Labels: map[string]string{"env": "prod"}, Healthy: true},
		{Name: "node-1", Kind: model.KindSSH, Healthy: false, Detail: "sshd down"},
	}}
	if reply, err := c.Heartbeat(ctx, good); err != nil || len(reply.Refused) != 0 {
		t.Fatalf("Heartbeat: got %+v, %v; want accepted, nothing refused", reply, err)
	}
	got := h.heartbeats()
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(good) {
		t.Fatalf("handler got %+v, want one %+v", got, good)
	}

	tests := []struct {
		name string
		hb   Heartbeat
		want string
	}{
		{"invalid name", Heartbeat{Resources: []ResourceStatus{{Name: "web server", Kind: model.KindTCP}}}, `resources[0]: invalid name "web server"`},
		{"empty name", Heartbeat{Resources: []ResourceStatus{{Name: "", Kind: model.KindTCP}}}, "resources[0]: invalid name"},
		{"unknown kind", Heartbeat{Resources: []ResourceStatus{{Name: "web", Kind: "http"}}}, `unknown kind "http"`},
		{"duplicate", Heartbeat{Resources: []ResourceStatus{{Name: "web", Kind: model.KindTCP}, {Name: "web", Kind: model.KindSSH}}}, `resources[1]: duplicate name "web"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.heartbeats())
			_, err := c.Heartbeat(ctx, tt.hb)
			if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), quoted(tt.want)) {
				t.Errorf("got %v, want a refusal holding %q", err, tt.want)
			}
			if n := len(h.heartbeats()); n != before {
				t.Errorf("an invalid heartbeat reached the handler (%d calls, want %d)", n, before)
			}
		})
	}

	t.Run("refused resources", func(t *testing.T) {
		want := HeartbeatReply{Refused: []Refused{{Name: "web", Reason: "outside this agent's grant"}}}
		h.mu.Lock()
		h.hbReply = want
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			h.hbReply = HeartbeatReply{}
			h.mu.Unlock()
		}()
		got, err := c.Heartbeat(ctx, good)
		if err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got reply %+v, want %+v", got, want)
		}
	})

	t.Run("handler error", func(t *testing.T) {
		h.mu.Lock()
		h.hbErr = errors.New("agent is draining")
		h.mu.Unlock()
		_, err := c.Heartbeat(ctx, good)
		if err == nil || !strings.Contains(err.Error(), "agent is draining") {
			t.Errorf("got %v, want a refusal with the handler's error", err)
		}
	})
}

// TestHelloOrder checks the Handler contract: Hello is called once per
// tunnel, before any heartbeat.
func TestHelloOrder(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &recHandler{reply: HelloReply{ProxyID: "proxy-1"}}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	// A raw agent connection that has not said hello.
	signer := agentSigner(t, a, "agent-1")
	conn, err := dialSSH(ctx, p.addr, &ssh.ClientConfig{
		User: "agent-1", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: Trust{CA: a.HostCA.PublicKey()}.hostKeyCallback(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go ssh.DiscardRequests(conn.reqs)
	var sc *ServerConn
	select {
	case sc = <-p.conns:
	case <-ctx.Done():
		t.Fatal("no tunnel reached the proxy")
	}
	defer sc.Close()
	go sc.Serve(h)

	hb := Heartbeat{Resources: []ResourceStatus{{Name: "web", Kind: model.KindTCP}}}
	ok, _, err := sendRequest(ctx, conn, ReqHeartbeat, encode(hb))
	if err != nil {
		t.Fatal(err)
	}
	if ok || len(h.heartbeats()) != 0 {
		t.Errorf("heartbeat before hello: got accepted %v, %d handler calls; want refused, 0 calls", ok, len(h.heartbeats()))
	}
	for i, want := range []bool{true, false} {
		ok, _, err := sendRequest(ctx, conn, ReqHello, encode(Hello{Version: "test"}))
		if err != nil {
			t.Fatal(err)
		}
		if ok != want {
			t.Errorf("hello %d: got accepted %v, want %v", i+1, ok, want)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.hellos) != 1 {
		t.Errorf("handler got %d hellos, want 1", len(h.hellos))
	}
}

func TestDial(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	c, sc, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, &recHandler{}, Hello{})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	t.Run("bytes both ways", func(t *testing.T) {
		want := DialRequest{SessionID: "s1", Resource: "web", Port: 8080, User: "alice", ClientAddr: "192.0.2.1:5555"}
		type opened struct {
			ch  ssh.Channel
			err error
		}
		done := make(chan opened, 1)
		go func() {
			ch, err := sc.Dial(ctx, want)
			done <- opened{ch, err}
		}()
		req, nch, err := c.Accept()
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		if req != want {
			t.Errorf("agent got %+v, want %+v", req, want)
		}
		agentCh, reqs, err := nch.Accept()
		if err != nil {
			t.Fatalf("accept channel: %v", err)
		}
		go ssh.DiscardRequests(reqs)
		defer agentCh.Close()
		o := <-done
		if o.err != nil {
			t.Fatalf("Dial: %v", o.err)
		}
		proxyCh := o.ch
		defer proxyCh.Close()

		// Larger than one channel window, so flow control is exercised.
		up := bytes.Repeat([]byte("proxy to agent "), 1<<16)
		down := bytes.Repeat([]byte("agent to proxy "), 1<<16)
		errc := make(chan error, 2)
		go func() {
			_, err := proxyCh.Write(up)
			if err == nil {
				err = proxyCh.CloseWrite()
			}
			errc <- err
		}()
		go func() {
			_, err := agentCh.Write(down)
			if err == nil {
				err = agentCh.CloseWrite()
			}
			errc <- err
		}()
		var gotUp, gotDown []byte
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); gotUp, _ = io.ReadAll(agentCh) }()
		go func() { defer wg.Done(); gotDown, _ = io.ReadAll(proxyCh) }()
		wg.Wait()
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("write: %v", err)
			}
		}
		if !bytes.Equal(gotUp, up) {
			t.Errorf("agent read %d bytes, want the %d the proxy wrote", len(gotUp), len(up))
		}
		if !bytes.Equal(gotDown, down) {
			t.Errorf("proxy read %d bytes, want the %d the agent wrote", len(gotDown), len(down))
		}
	})

	t.Run("rejected", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			ch, err := sc.Dial(ctx, DialRequest{SessionID: "s2", Resource: "db"})
			if ch != nil {
				ch.Close()
			}
			errc <- err
		}()
		_, nch, err := c.Accept()
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		const reason = "resource db is not healthy: connection refused"
		if err := nch.Reject(ssh.ConnectionFailed, reason); err != nil {
			t.Fatal(err)
		}
		err = <-errc
		var de *DialError
		if !errors.As(err, &de) || de.Reason != reason {
			t.Errorf("got %v (%T), want *DialError with reason %q", err, err, reason)
		}
	})

	t.Run("context ends first", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			ch, err := sc.Dial(short, DialRequest{SessionID: "s3", Resource: "slow"})
			if ch != nil {
				ch.Close()
			}
			errc <- err
		}()
		// The agent sees the request but does not answer in time.
		_, nch, err := c.Accept()
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want context.DeadlineExceeded", err)
			}
		case <-ctx.Done():
			t.Fatal("Dial did not return when its context ended")
		}
		// A late accept is closed by the proxy side.
		ch, reqs, err := nch.Accept()
		if err != nil {
			return // the tunnel may already have given up on it
		}
		go ssh.DiscardRequests(reqs)
		defer ch.Close()
		rc := make(chan error, 1)
		go func() { _, err := io.ReadAll(ch); rc <- err }()
		select {
		case <-rc:
		case <-ctx.Done():
			t.Error("a channel accepted after Dial gave up was never closed")
		}
	})

	t.Run("unknown channel type", func(t *testing.T) {
		// The agent rejects channels that are not dial requests and keeps
		// serving. Accept is called first so the rejection happens.
		acc := make(chan DialRequest, 1)
		go func() {
			req, nch, err := c.Accept()
			if err == nil {
				_ = nch.Reject(ssh.Prohibited, "test done")
				acc <- req
			}
		}()
		_, _, err := sc.conn.OpenChannel("session", nil)
		var oc *ssh.OpenChannelError
		if !errors.As(err, &oc) || oc.Reason != ssh.UnknownChannelType {
			t.Errorf("got %v, want an unknown-channel-type rejection", err)
		}
		if _, err := sc.Dial(ctx, DialRequest{SessionID: "s4", Resource: "web"}); err == nil {
			t.Error("got nil error from a dial the agent rejected")
		}
		select {
		case req := <-acc:
			if req.SessionID != "s4" {
				t.Errorf("Accept returned session %q, want s4", req.SessionID)
			}
		case <-ctx.Done():
			t.Error("Accept did not return the dial after the unknown channel")
		}
	})
}

func TestKeepalive(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))

	t.Run("answered", func(t *testing.T) {
		_, sc, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, &recHandler{}, Hello{})
		for i := range 3 {
			if err := sc.Keepalive(waitFor); err != nil {
				t.Fatalf("keepalive %d: %v", i, err)
			}
		}
	})

	t.Run("agent closed", func(t *testing.T) {
		c, sc, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, &recHandler{}, Hello{})
		c.Close()
		if err := sc.Keepalive(waitFor); err == nil {
			t.Error("got nil error from a keepalive to a closed agent")
		}
	})

	t.Run("agent silent", func(t *testing.T) {
		// A relay that goes silent, as a lost network does.
		r := slowlink.New(t, p.addr, 0)
		rp := &proxy{addr: r.Addr(), conns: p.conns, errs: p.errs}
		_, sc, _ := tunnel(t, rp, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, &recHandler{}, Hello{})
		if err := sc.Keepalive(waitFor); err != nil {
			t.Fatalf("keepalive through the relay: %v", err)
		}
		r.Freeze()
		const timeout = 200 * time.Millisecond
		err := sc.Keepalive(timeout)
		if err == nil || !strings.Contains(err.Error(), "no keepalive reply in "+timeout.String()) {
			t.Errorf("got %v, want a keepalive timeout", err)
		}
	})
}

// TestHandshakeTimeout checks that a client that connects and says nothing
// does not hold a handshake open past HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	a := newAuthority(t)
	cfg := baseServerConfig(t, a)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	p := startProxy(t, cfg)
	nc, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case err := <-p.errs:
		if !strings.Contains(err.Error(), "tunnel handshake from") {
			t.Errorf("got %v, want a handshake error", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the handshake of a silent client did not time out")
	}
	// The server closed the connection.
	_ = nc.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadAll(nc); err != nil {
		t.Errorf("read after the server gave up: got %v, want EOF", err)
	}
}

func TestServerConfigValidate(t *testing.T) {
	_, err := NewServer(ServerConfig{})
	if err == nil {
		t.Fatal("NewServer(ServerConfig{}): got nil error")
	}
	for _, field := range []string{"HostSigner", "AgentCA", "CheckJoinToken", "Join"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("got %q, want it to name %s", err, field)
		}
	}
	a := newAuthority(t)
	for _, tt := range []struct {
		name     string
		burst    int
		interval time.Duration
	}{{"negative burst", -1, 0}, {"negative interval", 0, -time.Second}} {
		cfg := baseServerConfig(t, a)
		cfg.JoinBurst, cfg.JoinInterval = tt.burst, tt.interval
		if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), "JoinBurst and JoinInterval") {
			t.Errorf("%s: got %v, want an error naming JoinBurst and JoinInterval", tt.name, err)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	var hb Heartbeat
	big := append([]byte(`{"seq":1,"resources":[],"x":"`), bytes.Repeat([]byte("a"), MaxPayload)...)
	big = append(big, `"}`...)
	if err := decode(big, &hb); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("decode of %d bytes: got %v, want a size error", len(big), err)
	}
	// Unknown fields are ignored, so either side can add fields.
	if err := decode([]byte(`{"seq":3,"resources":[],"new_field":{"a":1}}`), &hb); err != nil || hb.Seq != 3 {
		t.Errorf("decode with an unknown field: got seq %d, err %v; want 3, nil", hb.Seq, err)
	}
}
