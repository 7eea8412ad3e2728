package agent

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// fakeProxy is the tunnel side of a proxy on a real listener: it lets
// agents join, takes their tunnels (hello, heartbeats), and can turn
// connections away before their handshake as a proxy over its caps does.
type fakeProxy struct {
	id, addr string
	hint     time.Duration // the busy line's retry-after
	// busy is how many connections to turn away with a busy line next;
	// garbage, when set, is written to every connection instead, then
	// closed.
	busy    atomic.Int32
	garbage atomic.Pointer[[]byte]

	mu       sync.Mutex // guards the fields below
	set      []revtunnel.ProxyInfo
	refusals []time.Time // when each busy line was sent
	hellos   []time.Time // when each tunnel said hello
}

const fakeToken = "busy-test-token"

// startFakeProxy runs a fake proxy of auth's cluster with id until the
// test ends.
func startFakeProxy(t *testing.T, auth *pki.Authority, id string) *fakeProxy {
	t.Helper()
	key, _, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.IssueHostCert(key.PublicKey(), pki.HostCertRequest{ID: id, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	host, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := revtunnel.NewServer(revtunnel.ServerConfig{
		HostSigner:     host,
		AgentCA:        auth.AgentCA.PublicKey(),
		CheckJoinToken: func(tok string) bool { return tok == fakeToken },
		Join: func(req revtunnel.JoinRequest, _ string, _ net.Addr) (revtunnel.JoinResponse, error) {
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.PublicKey))
			if err != nil {
				return revtunnel.JoinResponse{}, err
			}
			c, err := auth.IssueAgentCert(pub, pki.AgentCertRequest{ID: req.Name, Names: req.Principals, TTL: time.Hour})
			if err != nil {
				return revtunnel.JoinResponse{}, err
			}
			return revtunnel.JoinResponse{
				AgentID:  req.Name,
				HostCert: string(ssh.MarshalAuthorizedKey(c)),
				UserCA:   string(ssh.MarshalAuthorizedKey(auth.UserCA.PublicKey())),
			}, nil
		},
		HandshakeTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProxy{id: id, addr: ln.Addr().String(), hint: 200 * time.Millisecond}
	var (
		wg    sync.WaitGroup
		cmu   sync.Mutex
		conns []*revtunnel.ServerConn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if g := p.garbage.Load(); g != nil {
				_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = nc.Write(*g)
				nc.Close()
				continue
			}
			if p.busy.Add(-1) >= 0 {
				p.mu.Lock()
				p.refusals = append(p.refusals, time.Now())
				p.mu.Unlock()
				_ = revtunnel.WriteBusy(nc, p.hint)
				nc.Close()
				continue
			}
			p.busy.Store(0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc, err := srv.Handshake(t.Context(), nc)
				if err != nil {
					return // a join, or an agent's probe
				}
				cmu.Lock()
				conns = append(conns, sc)
				cmu.Unlock()
				_ = sc.Serve(fakeHandler{p})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, sc := range conns {
			sc.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *fakeProxy) times() (refusals, hellos []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.refusals...), append([]time.Time(nil), p.hellos...)
}

type fakeHandler struct{ p *fakeProxy }

func (h fakeHandler) Hello(revtunnel.Hello) revtunnel.HelloReply {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	h.p.hellos = append(h.p.hellos, time.Now())
	return revtunnel.HelloReply{ProxyID: h.p.id, Proxies: h.p.set}
}

func (fakeHandler) Heartbeat(revtunnel.Heartbeat) (revtunnel.HeartbeatReply, error) {
	return revtunnel.HeartbeatReply{}, nil
}
func (fakeHandler) Login(revtunnel.Login)       {}
func (fakeHandler) Renew() revtunnel.RenewReply { return revtunnel.RenewReply{} }

// busyWorld is an agent of region us with two proxies: near (us, its
// first seed) and far (ap). The agent has joined and had its tunnel on
// near once, then stopped; restart starts it again from its identity.
type busyWorld struct {
	near, far *fakeProxy
	cfg       Config
	logs      *lockedBuffer
}

func newBusyWorld(t *testing.T) *busyWorld {
	t.Helper()
	auth, err := pki.Init(filepath.Join(t.TempDir(), "pki"), pki.InitOptions{ClusterName: "busy"})
	if err != nil {
		t.Fatal(err)
	}
	w := &busyWorld{near: startFakeProxy(t, auth, "near"), far: startFakeProxy(t, auth, "far"), logs: &lockedBuffer{}}
	set := []revtunnel.ProxyInfo{
		{ID: "near", Region: "us", Zone: "a", TunnelAddr: w.near.addr},
		{ID: "far", Region: "ap", Zone: "a", TunnelAddr: w.far.addr},
	}
	w.near.set, w.far.set = set, set
	w.cfg = Config{
		Name:      "busy-agent",
		DataDir:   t.TempDir(),
		Proxies:   []string{w.near.addr, w.far.addr},
		JoinToken: fakeToken,
		Region:    "us",
		Resources: []ResourceConfig{{Name: "svc", Kind: "tcp", Addr: "127.0.0.1:9"}},
		Logger:    slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	a := w.start(t)
	waitTunnel(t, a, "near")
	a.Close()
	return w
}

// start starts the agent; it is closed when the test ends.
func (w *busyWorld) start(t *testing.T) *Agent {
	t.Helper()
	a, err := New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// waitTunnel waits for the agent's one tunnel to be up on proxy id.
func waitTunnel(t *testing.T, a *Agent, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if got := a.TunnelProxies(); len(got) == 1 && got[0] == id {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no tunnel on %s after 20s (tunnels on %q)", id, a.TunnelProxies())
}

// failedAt reports whether the agent remembers proxy p as failed (by id
// or address): the mark that makes it avoid p.
func failedAt(a *Agent, p *fakeProxy) bool {
	a.dir.mu.Lock()
	defer a.dir.mu.Unlock()
	_, byID := a.dir.failed[p.id]
	_, byAddr := a.dir.failed[p.addr]
	return byID || byAddr
}

// TestBusyProxyIsRetriedNotShunned: the agent's preferred proxy answers
// "busy" three times (a fleet re-homing onto it at once): the agent does
// not take it for failed nor go to the farther proxy; it tries the same
// proxy again, each time after the wait it asked for, and has its tunnel
// there once the proxy has room. The retries are logged at debug level,
// not as failures.
func TestBusyProxyIsRetriedNotShunned(t *testing.T) {
	w := newBusyWorld(t)
	w.near.busy.Store(3)
	w.logs.Reset()
	a := w.start(t)
	waitTunnel(t, a, "near")

	refusals, hellos := w.near.times()
	if len(refusals) != 3 {
		t.Fatalf("near turned %d connections away, want 3", len(refusals))
	}
	if _, farHellos := w.far.times(); len(farHellos) != 0 {
		t.Errorf("the agent went to the far proxy %d times while near was busy", len(farHellos))
	}
	// Each try came after the hint (200 ms): refusals[i] → the next try.
	next := append(refusals[1:], hellos[len(hellos)-1])
	for i, r := range refusals {
		if gap := next[i].Sub(r); gap < w.near.hint {
			t.Errorf("try %d came %s after the busy line, before its %s hint", i+2, gap, w.near.hint)
		}
	}
	if failedAt(a, w.near) {
		t.Error("the busy proxy is remembered as failed")
	}
	out := w.logs.String()
	if n := strings.Count(out, "proxy busy; trying it again"); n != 3 {
		t.Errorf("%d busy retries logged, want 3:\n%s", n, out)
	}
	if regexp.MustCompile(`level=(WARN|ERROR) msg="tunnel failed`).MatchString(out) {
		t.Errorf("a busy answer was logged as a failure:\n%s", out)
	}
}

// TestAlwaysBusyProxyIsLeftAfterBoundedRetries: a proxy (or anyone
// answering at its address) that says "busy" every time holds the agent
// for at most maxBusyRetries waits in a row; then the agent takes it for
// failed and goes to the other proxy, as for any failure.
func TestAlwaysBusyProxyIsLeftAfterBoundedRetries(t *testing.T) {
	w := newBusyWorld(t)
	w.near.hint = time.Millisecond // under minBusyWait: the agent waits that
	w.near.busy.Store(1 << 30)
	w.logs.Reset()
	a := w.start(t)
	waitTunnel(t, a, "far")

	refusals, _ := w.near.times()
	if len(refusals) < maxBusyRetries+1 {
		t.Errorf("near turned away %d connections before the agent left, want at least %d", len(refusals), maxBusyRetries+1)
	}
	for i := 1; i < len(refusals) && i <= maxBusyRetries; i++ {
		if gap := refusals[i].Sub(refusals[i-1]); gap < minBusyWait {
			t.Errorf("try %d came %s after a busy line, under minBusyWait", i+1, gap)
		}
	}
	out := w.logs.String()
	most := 0
	for _, m := range regexp.MustCompile(`proxy busy; trying it again.* busy=(\d+)`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		most = max(most, n)
	}
	if most != maxBusyRetries {
		t.Errorf("at most %d busy retries in a row, want %d:\n%s", most, maxBusyRetries, out)
	}
	if !regexp.MustCompile(`msg="tunnel failed; retrying".*proxy is busy`).MatchString(out) {
		t.Errorf("the last busy answer was not taken as a failure:\n%s", out)
	}
}

// TestGarbageBeforeTheVersionIsAFailure: a "proxy" that sends garbage,
// an endless line or an oversized busy line before closing is no busy
// proxy: the agent takes it for failed (no retry of it, no crash) and
// has its tunnel on the other proxy.
func TestGarbageBeforeTheVersionIsAFailure(t *testing.T) {
	for name, g := range map[string][]byte{
		"garbage lines":          []byte("GET / HTTP/1.0\r\n\r\nwarren-busy retry-after-ms=100\r\n"),
		"an endless line":        bytes.Repeat([]byte{0xff, 'x', 0}, 1<<16),
		"an oversized busy line": []byte("warren-busy " + strings.Repeat("k=v ", 100) + "retry-after-ms=100\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			w := newBusyWorld(t)
			w.near.garbage.Store(&g)
			w.logs.Reset()
			a := w.start(t)
			waitTunnel(t, a, "far")
			if !failedAt(a, w.near) {
				t.Error("the proxy that sent garbage is not remembered as failed")
			}
			if out := w.logs.String(); strings.Contains(out, "proxy busy") {
				t.Errorf("garbage read as a busy answer:\n%s", out)
			}
		})
	}
}

// The wait for a busy proxy is its hint within [minBusyWait,
// MaxBusyRetryAfter] plus at most a tenth of jitter, however large the
// hint; anything but a busy answer is none.
func TestBusyWaitIsCapped(t *testing.T) {
	huge, ok := revtunnel.ParseBusy([]byte("warren-busy retry-after-ms=" + strings.Repeat("9", 40) + "\r\n"))
	if !ok {
		t.Fatal("a busy line with a huge hint is not read as busy")
	}
	for _, c := range []struct{ hint, lo, hi time.Duration }{
		{huge, revtunnel.MaxBusyRetryAfter, revtunnel.MaxBusyRetryAfter * 11 / 10},
		{24 * time.Hour, revtunnel.MaxBusyRetryAfter, revtunnel.MaxBusyRetryAfter * 11 / 10},
		{0, minBusyWait, minBusyWait * 11 / 10},
		{-time.Second, minBusyWait, minBusyWait * 11 / 10},
		{time.Second, time.Second, time.Second * 11 / 10},
	} {
		for range 100 {
			d, ok := busyWait(errors.Join(errors.New("x"), &revtunnel.BusyError{RetryAfter: c.hint}))
			if !ok || d < c.lo || d > c.hi {
				t.Fatalf("hint %s: wait %s, %v; want within [%s, %s]", c.hint, d, ok, c.lo, c.hi)
			}
		}
	}
	if _, ok := busyWait(errors.New("ssh: handshake failed: EOF")); ok {
		t.Error("a plain failure read as busy")
	}
}

// lockedBuffer is a log's output, read while agents still write to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
