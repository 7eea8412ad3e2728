package proxy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
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
	return p
}

// An agent's probe (a connection reset before a byte) is not logged as a
// refused tunnel; garbage on the socket is.
func TestProbesAreNotLoggedAsRefusals(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	p := acceptProxy(t, ln, &logs)
	// Room for every connection at once: the probes' handshakes may not
	// have ended when the garbage comes.
	p.tunnelGate = &gate.Gate{Max: 16, MaxPerIP: 16}
	defer serveTunnels(p, ln)()
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
