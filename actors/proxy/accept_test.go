package proxy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/accept"
	"github.com/warren-proxy/warren/internal/accept/accepttest"
	"github.com/warren-proxy/warren/internal/gate"
	"github.com/warren-proxy/warren/internal/logsample"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// TestAcceptTunnelsSurvivesEMFILE: the tunnel listener's accept loop waits
// out a run of EMFILE errors (5 ms, 10 ms, 20 ms, … rather than spinning or
// giving up), and then serves the next agent: its connection reaches the
// tunnel server's SSH handshake.
func TestAcceptTunnelsSurvivesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const fails = 4
	fl := &accepttest.EMFILEListener{Listener: ln, Fail: fails}
	var logs syncBuffer
	p := acceptProxy(t, fl, &logs)
	start := time.Now()
	defer serveTunnels(p, ln)()

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	banner, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no SSH banner from the tunnel listener after %d EMFILE errors: %v\nlog:\n%s", fails, err, logs.String())
	}
	if !strings.HasPrefix(banner, "SSH-2.0-warren-tunnel") {
		t.Fatalf("banner %q, want the tunnel server's", banner)
	}
	if n := fl.Failed(); n != fails {
		t.Errorf("%d failed accepts, want %d", n, fails)
	}
	// The waits add up: 5+10+20+40 ms before the accept that works.
	var want time.Duration
	var b accept.Backoff
	for range fails {
		want += b.Next()
	}
	if el := time.Since(start); el < want {
		t.Errorf("served after %v, before the backoff's %v: the loop did not wait", el, want)
	}
	if got := strings.Count(logs.String(), "accept tunnel failed; retrying"); got != fails {
		t.Errorf("%d retries logged, want %d:\n%s", got, fails, logs.String())
	}
}

// acceptProxy is a proxy with only what the tunnel accept loop needs,
// listening on ln and logging to logs.
func acceptProxy(t *testing.T, ln net.Listener, logs *syncBuffer) *Proxy {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, nil))

	_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
	host, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := revtunnel.NewServer(revtunnel.ServerConfig{
		HostSigner:     host,
		AgentCA:        host.PublicKey(),
		CheckJoinToken: func(string) bool { return false },
		Join: func(revtunnel.JoinRequest, string, net.Addr) (revtunnel.JoinResponse, error) {
			return revtunnel.JoinResponse{}, os.ErrPermission
		},
		HandshakeTimeout: 5 * time.Second,
		Logger:           log,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{
		log:          log,
		tunnelLn:     ln,
		tunnelSrv:    srv,
		tunnelGate:   &gate.Gate{Max: 4, MaxPerIP: 4},
		refusedConns: logsample.New(log, "refused", logsample.Every),
	}
	p.metrics = newMetrics(p)
	return p
}

// servingProxy is an acceptProxy under gate g, its accept loop serving on
// 127.0.0.1 until the test ends.
func servingProxy(t *testing.T, g *gate.Gate) (p *Proxy, ln net.Listener, logs *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = &syncBuffer{}
	p = acceptProxy(t, ln, logs)
	p.tunnelGate = g
	t.Cleanup(serveTunnels(p, ln))
	return p, ln, logs
}

// An agent's probe (a connection reset before a byte) is not logged as a
// refused tunnel; garbage on the socket is.
func TestProbesAreNotLoggedAsRefusals(t *testing.T) {
	// Room for every connection at once: the probes' handshakes may not
	// have ended when the garbage comes.
	_, ln, logs := servingProxy(t, &gate.Gate{Max: 16, MaxPerIP: 16})
	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "tunnel refused") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Count(logs.String(), "tunnel refused"); got != 1 {
		t.Errorf("%d connections logged as refused tunnels, want 1 (the garbage, not the 5 probes):\n%s", got, logs.String())
	}
}

// serveTunnels runs p's tunnel accept loop on ln; the function it returns
// stops it and waits for every handshake.
func serveTunnels(p *Proxy, ln net.Listener) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.acceptTunnels(ctx)
	}()
	return func() {
		cancel()
		ln.Close()
		<-done
		p.wg.Wait()
	}
}

// syncBuffer is a log's output, read while the loop may still write.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// holdSlot opens a connection from local that says nothing, so that it
// holds a place under the handshake caps until it is closed (or the
// handshake timeout); it returns once the proxy has taken it (its banner
// came). Close it before stopping the accept loop, which waits for it.
func holdSlot(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("connection from %s: %q, %v; want the tunnel server's banner", local, line, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// TestRefusedTunnelConnectionIsToldBusy: a connection over the
// per-address cap gets one busy line (a jittered hint within the proxy's
// range) and the close, nothing else; an agent dialing in sees a
// *revtunnel.BusyError. The refusals are still logged, sampled.
func TestRefusedTunnelConnectionIsToldBusy(t *testing.T) {
	_, ln, logs := servingProxy(t, &gate.Gate{Max: 16, MaxPerIP: 1})
	defer holdSlot(t, "127.0.0.1", ln.Addr().String()).Close()

	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("read from a refused connection: %v (after %q)", err, got)
		}
		hint, ok := revtunnel.ParseBusy(got)
		if !ok || !strings.HasPrefix(string(got), "warren-busy retry-after-ms=") || !strings.HasSuffix(string(got), "\r\n") || strings.Count(string(got), "\n") != 1 {
			t.Fatalf("a refused connection got %q, want one busy line and the close", got)
		}
		if lo, hi := busyMinWait*9/10, revtunnel.MaxBusyRetryAfter*11/10; hint < lo || hint > hi {
			t.Errorf("hint %s, want within [%s, %s]", hint, lo, hi)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(key)
	_, _, err = revtunnel.Dial(ctx, revtunnel.ClientConfig{Addr: ln.Addr().String(), AgentID: "a1", Signer: signer}, revtunnel.Hello{})
	var busy *revtunnel.BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("an agent turned away: %v, want a BusyError", err)
	}
	if out := logs.String(); !strings.Contains(out, "msg=refused") || !strings.Contains(out, "told_busy=true") {
		t.Errorf("the refusals were not logged with the busy line told:\n%s", out)
	}
}

// TestBusyFloodDoesNotBlockTheAcceptLoop: while one address floods the
// listener with connections that never read (each turned away with a busy
// line), an agent from another address is still served at once, and
// every flooding connection was answered and closed.
func TestBusyFloodDoesNotBlockTheAcceptLoop(t *testing.T) {
	_, ln, _ := servingProxy(t, &gate.Gate{Max: 16, MaxPerIP: 1})
	addr := ln.Addr().String()
	defer holdSlot(t, "127.0.0.1", addr).Close()

	const flood, workers = 600, 8
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range flood / workers {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					continue
				}
				// A peer that reads nothing and announces a tiny window.
				_ = c.(*net.TCPConn).SetReadBuffer(1)
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	// Mid-flood, an agent from another address.
	for {
		mu.Lock()
		n := len(conns)
		mu.Unlock()
		if n >= flood/4 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	defer holdSlot(t, "127.0.0.2", addr).Close()
	served := time.Since(start)
	wg.Wait()
	close(stop)
	if served > 2*time.Second {
		t.Errorf("an agent from another address waited %s for the banner during the flood", served)
	}
	t.Logf("served in %s during a flood of %d connections", served, flood)

	mu.Lock()
	flooders := append([]net.Conn(nil), conns...)
	mu.Unlock()
	if len(flooders) < flood*9/10 {
		t.Fatalf("only %d of %d flooding connections opened", len(flooders), flood)
	}
	for i, c := range flooders {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		if _, ok := revtunnel.ParseBusy(got); !ok || err != nil {
			t.Fatalf("flooding connection %d: %q, %v; want a busy line and the close", i, got, err)
		}
	}
}

// stuckConn is a peer whose window never opens: a write waits for its
// deadline, and forever without one.
type stuckConn struct {
	net.Conn
	mu       sync.Mutex
	deadline time.Time
}

func (c *stuckConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return nil
}

func (c *stuckConn) Write([]byte) (int, error) {
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	if d.IsZero() {
		select {} // the accept loop would hang here
	}
	time.Sleep(time.Until(d))
	return 0, os.ErrDeadlineExceeded
}

// TestTurnAwayDoesNotWaitOnThePeer: even a peer that takes no byte holds
// the accept loop's refusal no longer than the busy line's write
// deadline, a few milliseconds; its connection is closed all the same.
func TestTurnAwayDoesNotWaitOnThePeer(t *testing.T) {
	var logs syncBuffer
	p := &Proxy{
		tunnelGate:   &gate.Gate{Max: 1, MaxPerIP: 1},
		refusedConns: logsample.New(slog.New(slog.NewTextHandler(&logs, nil)), "refused", logsample.Every),
	}
	server, client := net.Pipe()
	defer client.Close()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		p.turnAway(&stuckConn{Conn: server}, gate.RefusedPerIP)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("turnAway still waits on a peer that reads nothing after 5s")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("turnAway took %s on a stuck peer", el)
	}
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the refused connection is not closed: %v", err)
	}
	if !strings.Contains(logs.String(), "told_busy=false") {
		t.Errorf("the refusal is not logged as untold:\n%s", logs.String())
	}
}
