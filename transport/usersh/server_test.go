package usersh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/transport/pki"
)

// waitFor bounds every wait in these tests, so a bug fails a test instead
// of hanging it.
const waitFor = 10 * time.Second

func newAuthority(t *testing.T) *pki.Authority {
	t.Helper()
	a, err := pki.Init(filepath.Join(t.TempDir(), "pki"), pki.InitOptions{})
	if err != nil {
		t.Fatalf("pki.Init: %v", err)
	}
	return a
}

func newKey(t *testing.T) ssh.Signer {
	t.Helper()
	s, _, err := pki.GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return s
}

func certSigner(t *testing.T, cert *ssh.Certificate, key ssh.Signer) ssh.Signer {
	t.Helper()
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatalf("NewCertSigner: %v", err)
	}
	return s
}

// userSigner returns a key with a user certificate from a for alice, who
// may log in as alice or ubuntu, issued at now (zero: the current time).
func userSigner(t *testing.T, a *pki.Authority, now time.Time) ssh.Signer {
	t.Helper()
	key := newKey(t)
	cert, err := a.IssueUserCert(key.PublicKey(), pki.UserCertRequest{
		User: "alice", Logins: []string{"alice", "ubuntu"}, Roles: []string{"admin", "dev"}, TTL: time.Hour, Now: now,
	})
	if err != nil {
		t.Fatalf("IssueUserCert: %v", err)
	}
	return certSigner(t, cert, key)
}

// recHandler records calls. A direct-tcpip to "echo" is accepted and
// echoed, "wait" is accepted and held until the connection's context ends,
// "hold" is accepted and held until the user closes it or goes away,
// anything else is rejected with a reason; every one calls done when it
// has finished with the channel. The command "fail" exits 3,
// "wait" blocks until the context ends, anything else prints its
// arguments and exits 0.
type recHandler struct {
	ctxDone chan bool // a "wait" handler reports whether its ctx ended

	mu       sync.Mutex // guards the fields below
	targets  []Target
	commands [][]string
	ids      []Identity
}

func newHandler() *recHandler { return &recHandler{ctxDone: make(chan bool, 4)} }

func (h *recHandler) DirectTCPIP(ctx context.Context, conn *Conn, target Target, nch ssh.NewChannel, done func()) {
	defer done()
	h.mu.Lock()
	h.targets = append(h.targets, target)
	h.ids = append(h.ids, conn.Identity)
	h.mu.Unlock()
	switch target.Host {
	case "echo":
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		defer ch.Close()
		_, _ = io.Copy(ch, ch)
		_ = ch.CloseWrite()
	case "wait":
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		defer ch.Close()
		// Stands for a slow dial to an agent that only the
		// connection's context can cut short.
		select {
		case <-ctx.Done():
			h.ctxDone <- true
		case <-time.After(3 * time.Second):
			h.ctxDone <- false
		}
	case "hold":
		ch, reqs, err := nch.Accept()
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		defer ch.Close()
		stop := context.AfterFunc(ctx, func() { ch.Close() })
		defer stop()
		_, _ = io.Copy(io.Discard, ch)
	default:
		_ = nch.Reject(ssh.ConnectionFailed, fmt.Sprintf("resource %s is offline", target.Host))
	}
}

func (h *recHandler) Command(ctx context.Context, conn *Conn, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	h.mu.Lock()
	h.commands = append(h.commands, args)
	h.ids = append(h.ids, conn.Identity)
	h.mu.Unlock()
	if len(args) > 0 && args[0] == "fail" {
		fmt.Fprintln(stderr, "failed on purpose")
		return 3
	}
	fmt.Fprintf(stdout, "%s ran %s\n", conn.Identity.User, strings.Join(args, " "))
	return 0
}

func (h *recHandler) lastTarget() (Target, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.targets) == 0 {
		return Target{}, false
	}
	return h.targets[len(h.targets)-1], true
}

type server struct {
	srv    *Server
	addr   string
	hostCA ssh.PublicKey
	served chan error
}

// startServer serves a Server for cfg (host key, user CA and handler
// filled in when empty) on a loopback listener until cleanup.
func startServer(t *testing.T, a *pki.Authority, cfg Config) *server {
	t.Helper()
	return startServerOn(t, a, cfg, nil)
}

// startServerOn is startServer with the listener wrapped by wrap, if not
// nil.
func startServerOn(t *testing.T, a *pki.Authority, cfg Config, wrap func(net.Listener) net.Listener) *server {
	t.Helper()
	if len(cfg.HostSigners) == 0 {
		key := newKey(t)
		cert, err := a.IssueHostCert(key.PublicKey(), pki.HostCertRequest{ID: "proxy-1", Principals: []string{"127.0.0.1"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cfg.HostSigners = []ssh.Signer{certSigner(t, cert, key)}
	}
	if len(cfg.UserCAs) == 0 {
		cfg.UserCAs = []ssh.PublicKey{a.UserCA.PublicKey()}
	}
	if cfg.Handler == nil {
		cfg.Handler = newHandler()
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{srv: srv, addr: ln.Addr().String(), hostCA: a.HostCA.PublicKey(), served: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	served := ln
	if wrap != nil {
		served = wrap(ln)
	}
	go func() { s.served <- srv.Serve(ctx, served) }()
	t.Cleanup(func() {
		cancel()
		closed := make(chan struct{})
		go func() { srv.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(waitFor):
			t.Error("Close did not return")
		}
		select {
		case <-s.served:
		case <-time.After(waitFor):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

// clientConfig trusts the cluster host CA and records banners.
func (s *server) clientConfig(user string, auth ssh.Signer, banners *[]string) *ssh.ClientConfig {
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return bytes.Equal(auth.Marshal(), s.hostCA.Marshal())
	}}
	return &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(auth)},
		HostKeyCallback: checker.CheckHostKey,
		BannerCallback: func(msg string) error {
			if banners != nil {
				*banners = append(*banners, msg)
			}
			return nil
		},
		Timeout: waitFor,
	}
}

func (s *server) dial(t *testing.T, user string, auth ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", s.addr, s.clientConfig(user, auth, nil))
	if err != nil {
		t.Fatalf("ssh.Dial as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCommand(t *testing.T) {
	a := newAuthority(t)
	h := newHandler()
	s := startServer(t, a, Config{Handler: h})
	signer := userSigner(t, a, time.Time{})

	tests := []struct {
		login      string
		command    string
		wantStatus int
		wantOut    string
		wantErrOut string
	}{
		{"alice", "ls", 0, "alice ran ls\n", ""},
		{"alice", "ls  -l   web", 0, "alice ran ls -l web\n", ""},
		{"ubuntu", "ls", 0, "alice ran ls\n", ""},
		{"alice", "fail now", 3, "", "failed on purpose\n"},
	}
	for _, tt := range tests {
		t.Run(tt.login+" "+tt.command, func(t *testing.T) {
			c := s.dial(t, tt.login, signer)
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			var out, errOut bytes.Buffer
			sess.Stdout, sess.Stderr = &out, &errOut
			err = sess.Run(tt.command)
			status := 0
			var ee *ssh.ExitError
			switch {
			case errors.As(err, &ee):
				status = ee.ExitStatus()
			case err != nil:
				t.Fatalf("Run(%q): %v", tt.command, err)
			}
			if status != tt.wantStatus || out.String() != tt.wantOut || errOut.String() != tt.wantErrOut {
				t.Errorf("Run(%q): got status %d, stdout %q, stderr %q; want %d, %q, %q",
					tt.command, status, out.String(), errOut.String(), tt.wantStatus, tt.wantOut, tt.wantErrOut)
			}
		})
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if got, want := fmt.Sprint(h.commands), "[[ls] [ls -l web] [ls] [fail now]]"; got != want {
		t.Errorf("handler got commands %s, want %s", got, want)
	}
	id := h.ids[0]
	if id.User != "alice" || id.KeyID != "alice" || !slices.Equal(id.Roles, []string{"admin", "dev"}) ||
		!slices.Equal(id.Logins, []string{"alice", "ubuntu"}) || id.Serial == 0 ||
		!id.HasRole("admin") || id.HasRole("root") {
		t.Errorf("got identity %+v, want alice with roles admin,dev and logins alice,ubuntu", id)
	}
	if d := time.Until(id.ValidUntil); d < 50*time.Minute || d > 61*time.Minute {
		t.Errorf("got ValidUntil %s, want about an hour from now", id.ValidUntil)
	}
}

func TestShellPrintsHelp(t *testing.T) {
	a := newAuthority(t)
	s := startServer(t, a, Config{Help: "use me as a jump host\nthat is all\n"})
	c := s.dial(t, "alice", userSigner(t, a, time.Time{}))
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatalf("pty-req: %v", err)
	}
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	if err := sess.Wait(); err != nil {
		t.Errorf("shell exit: %v, want status 0", err)
	}
	if got, want := out.String(), "use me as a jump host\r\nthat is all\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDirectTCPIP(t *testing.T) {
	a := newAuthority(t)
	h := newHandler()
	s := startServer(t, a, Config{Handler: h})
	c := s.dial(t, "alice", userSigner(t, a, time.Time{}))

	conn, err := c.Dial("tcp", "echo:8080")
	if err != nil {
		t.Fatalf("direct-tcpip to echo: %v", err)
	}
	defer conn.Close()
	if got, ok := h.lastTarget(); !ok || got != (Target{Host: "echo", Port: 8080}) {
		t.Errorf("handler got target %+v, want echo:8080", got)
	}
	msg := []byte("through the jump host")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Errorf("got echo %q, %v; want %q", buf, err, msg)
	}

	_, err = c.Dial("tcp", "db:5432")
	var oc *ssh.OpenChannelError
	if !errors.As(err, &oc) || oc.Message != "resource db is offline" {
		t.Errorf("direct-tcpip to db: got %v, want the handler's rejection", err)
	}
	if got, _ := h.lastTarget(); got != (Target{Host: "db", Port: 5432}) {
		t.Errorf("handler got target %+v, want db:5432", got)
	}

	// Other channel types are refused by the server itself.
	_, _, err = c.OpenChannel("x11", nil)
	if !errors.As(err, &oc) || oc.Reason != ssh.UnknownChannelType {
		t.Errorf("x11 channel: got %v, want an unknown-channel-type rejection", err)
	}
	// A malformed direct-tcpip request does not reach the handler.
	before := len(h.targets)
	_, _, err = c.OpenChannel("direct-tcpip", []byte{0, 0})
	if !errors.As(err, &oc) || oc.Reason != ssh.ConnectionFailed {
		t.Errorf("malformed direct-tcpip: got %v, want a connection-failed rejection", err)
	}
	h.mu.Lock()
	if len(h.targets) != before {
		t.Errorf("a malformed direct-tcpip reached the handler: %+v", h.targets[before:])
	}
	h.mu.Unlock()
}

func TestAuthRefused(t *testing.T) {
	a := newAuthority(t)
	other := newAuthority(t)
	s := startServer(t, a, Config{})

	hostKey := newKey(t)
	hostCert, err := a.IssueHostCert(hostKey.PublicKey(), pki.HostCertRequest{ID: "alice", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A certificate Warren would never issue: it demands a forced command.
	forcedKey := newKey(t)
	forced := &ssh.Certificate{
		Key: forcedKey.PublicKey(), CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{CriticalOptions: map[string]string{"force-command": "/bin/true"}},
	}
	if err := forced.SignCert(rand.Reader, a.UserCA); err != nil {
		t.Fatal(err)
	}
	// A certificate bound to addresses the test client is not at.
	elsewhereKey := newKey(t)
	elsewhere := &ssh.Certificate{
		Key: elsewhereKey.PublicKey(), CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{CriticalOptions: map[string]string{"source-address": "192.0.2.0/24"}},
	}
	if err := elsewhere.SignCert(rand.Reader, a.UserCA); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		user       string
		signer     ssh.Signer
		wantBanner string // "" means no banner at all
	}{
		{"plain key", "alice", newKey(t), ""},
		{"host certificate", "alice", certSigner(t, hostCert, hostKey), "your certificate is a host certificate, not a user certificate"},
		{"expired certificate", "alice", userSigner(t, a, time.Now().Add(-3*time.Hour)), "your certificate expired at"},
		{"certificate not yet valid", "alice", userSigner(t, a, time.Now().Add(2*time.Hour)), "your certificate is not valid before"},
		{"certificate from another CA", "alice", userSigner(t, other, time.Time{}), "your certificate is not signed by the cluster user CA"},
		{"another user's name", "mallory", userSigner(t, a, time.Time{}), `log in to the proxy as "alice" (your user name), not "mallory"`},
		{"forced command", "alice", certSigner(t, forced, forcedKey), "has critical options force-command, which Warren does not enforce"},
		{"source-address elsewhere", "alice", certSigner(t, elsewhere, elsewhereKey), "your certificate may be used only from 192.0.2.0/24, not from 127."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var banners []string
			c, err := ssh.Dial("tcp", s.addr, s.clientConfig(tt.user, tt.signer, &banners))
			if err == nil {
				c.Close()
				t.Fatal("ssh.Dial: got a connection, want an auth failure")
			}
			if !strings.Contains(err.Error(), "unable to authenticate") {
				t.Errorf("got %v, want an auth failure", err)
			}
			got := strings.Join(banners, "")
			switch {
			case tt.wantBanner == "" && got != "":
				t.Errorf("got banner %q, want none", got)
			case tt.wantBanner != "" && !strings.Contains(got, tt.wantBanner):
				t.Errorf("got banner %q, want it to hold %q", got, tt.wantBanner)
			case tt.wantBanner != "" && !strings.HasPrefix(got, "warren: "):
				t.Errorf("got banner %q, want it to start with %q", got, "warren: ")
			}
		})
	}
}

// TestAuthSourceAddress: a certificate bound to the client's address
// (source-address) logs in; pki's check enforces it with the address the
// proxy sees. (One bound elsewhere is refused, in TestAuthRefused.)
func TestAuthSourceAddress(t *testing.T) {
	a := newAuthority(t)
	s := startServer(t, a, Config{})
	key := newKey(t)
	cert := &ssh.Certificate{
		Key: key.PublicKey(), CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{CriticalOptions: map[string]string{"source-address": "192.0.2.1,127.0.0.0/8"}},
	}
	if err := cert.SignCert(rand.Reader, a.UserCA); err != nil {
		t.Fatal(err)
	}
	var banners []string
	c, err := ssh.Dial("tcp", s.addr, s.clientConfig("alice", certSigner(t, cert, key), &banners))
	if err != nil {
		t.Fatalf("login with a certificate bound to 127.0.0.0/8: %v (banners %q)", err, banners)
	}
	c.Close()
}

// TestGarbageClients checks that clients that are not SSH, or stop in the
// middle of the handshake, do not stop the server serving others.
func TestGarbageClients(t *testing.T) {
	a := newAuthority(t)
	s := startServer(t, a, Config{HandshakeTimeout: 5 * time.Second})
	signer := userSigner(t, a, time.Time{})

	junk := make([]byte, 4096)
	if _, err := rand.Read(junk); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		send []byte
		hold bool // keep the connection open afterwards
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"random bytes", junk, false},
		{"version then junk", append([]byte("SSH-2.0-junk\r\n"), junk...), false},
		{"nothing, held open", nil, true},
		{"version only, held open", []byte("SSH-2.0-slow\r\n"), true},
		{"huge version line", bytes.Repeat([]byte("S"), 64<<10), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := net.DialTimeout("tcp", s.addr, waitFor)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(waitFor))
			if len(tt.send) > 0 {
				_, _ = nc.Write(tt.send)
			}
			if !tt.hold {
				nc.Close()
			}
			// The next client is served at once.
			c := s.dial(t, "alice", signer)
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			if out, err := sess.Output("ls"); err != nil || string(out) != "alice ran ls\n" {
				t.Errorf("after a %s client: got %q, %v; want the command served", tt.name, out, err)
			}
		})
	}
}

// TestDisconnectCancelsContext checks that a handler learns through its
// context that the user went away, so a slow dial on their behalf stops.
func TestDisconnectCancelsContext(t *testing.T) {
	a := newAuthority(t)
	h := newHandler()
	s := startServer(t, a, Config{Handler: h})
	c, err := ssh.Dial("tcp", s.addr, s.clientConfig("alice", userSigner(t, a, time.Time{}), nil))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Dial("tcp", "wait:22")
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	conn.Close()
	c.Close()
	select {
	case done := <-h.ctxDone:
		if !done {
			t.Error("the handler's context was not cancelled after the user disconnected")
		}
	case <-time.After(waitFor):
		t.Fatal("the handler did not return")
	}
}

// rawServer serves a Server with a plain host key on a loopback listener
// and returns it with its address and the channel Serve's result arrives
// on. The test closes it.
func rawServer(t *testing.T, a *pki.Authority, handshakeTimeout time.Duration) (*Server, string, <-chan error) {
	t.Helper()
	srv, err := New(Config{
		HostSigners:      []ssh.Signer{newKey(t)},
		UserCAs:          []ssh.PublicKey{a.UserCA.PublicKey()},
		Handler:          newHandler(),
		HandshakeTimeout: handshakeTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	return srv, ln.Addr().String(), served
}

// closeWithin runs srv.Close and fails the test if it takes longer than d.
func closeWithin(t *testing.T, srv *Server, d time.Duration) {
	t.Helper()
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(d):
		t.Fatalf("Close did not return within %s", d)
	}
}

// TestCloseStopsEverything checks that Close ends every connection,
// returns, and leaves no goroutine behind.
func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	a := newAuthority(t)
	srv, addr, served := rawServer(t, a, waitFor)

	// An authenticated user with an open tunnel and a session.
	cfg := &ssh.ClientConfig{
		User: "alice", Auth: []ssh.AuthMethod{ssh.PublicKeys(userSigner(t, a, time.Time{}))},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: waitFor,
	}
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo, err := c.Dial("tcp", "echo:1")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	closeWithin(t, srv, waitFor)
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Serve did not return after Close")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(context.Background(), ln); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close: got %v, want net.ErrClosed", err)
	}
	ln.Close()

	// The user's connection was closed by the server.
	waited := make(chan struct{})
	go func() { _ = c.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(waitFor):
		t.Error("the user's connection is still open after Close")
	}
	sess.Close()
	echo.Close()
	c.Close()

	deadline := time.Now().Add(waitFor)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCloseDuringHandshake checks that Close also ends a connection still
// in its SSH handshake instead of waiting out HandshakeTimeout.
func TestCloseDuringHandshake(t *testing.T) {
	a := newAuthority(t)
	srv, addr, served := rawServer(t, a, time.Minute)

	// The server has answered this client's version line and waits for
	// its key exchange.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.SetDeadline(time.Now().Add(waitFor))
	if _, err := slow.Write([]byte("SSH-2.0-slow\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(slow).ReadString('\n'); err != nil || !strings.HasPrefix(line, "SSH-2.0-warren-proxy") {
		t.Fatalf("got server version %q, %v", line, err)
	}
	// Unblock the server's handshake if Close does not, so the
	// failure below does not leave it running.
	defer slow.Close()

	closeWithin(t, srv, 3*time.Second)
	select {
	case <-served:
	case <-time.After(waitFor):
		t.Fatal("Serve did not return after Close")
	}
	if _, err := io.ReadAll(slow); err != nil && isTimeout(err) {
		t.Error("the server did not close a connection in its handshake")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestConfigValidate(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("New(Config{}): got nil error")
	}
	for _, want := range []string{"HostSigners", "UserCAs", "Handler"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to name %s", err, want)
		}
	}
}
