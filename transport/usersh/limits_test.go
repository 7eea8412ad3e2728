package usersh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/transport/pki"
)

// The tests in this file are the attacks of a security review, each
// refused while everyone else goes on being served.

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines that contain substr.
func (b *syncBuffer) lines(substr string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func captureLog() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// signerFor returns a key with a user certificate from a for user.
func signerFor(t *testing.T, a *pki.Authority, user string) ssh.Signer {
	t.Helper()
	key := newKey(t)
	cert, err := a.IssueUserCert(key.PublicKey(), pki.UserCertRequest{User: user, Logins: []string{user}, TTL: time.Hour})
	if err != nil {
		t.Fatalf("IssueUserCert: %v", err)
	}
	return certSigner(t, cert, key)
}

// openHold opens a direct-tcpip channel to the test handler's "hold"
// target, which keeps it open until the client closes it.
func openHold(c *ssh.Client) (ssh.Channel, error) {
	ch, reqs, err := c.OpenChannel("direct-tcpip", ssh.Marshal(struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}{"hold", 22, "127.0.0.1", 40000}))
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

// openDirect opens a direct-tcpip channel to host with raw fields, as an
// attacker's client would.
func openDirect(c *ssh.Client, host string, port uint32) error {
	ch, reqs, err := c.OpenChannel("direct-tcpip", ssh.Marshal(struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}{host, port, "127.0.0.1", 40000}))
	if err == nil {
		go ssh.DiscardRequests(reqs)
		ch.Close()
	}
	return err
}

// echoWorks checks a round trip through an "echo" channel on c.
func echoWorks(t *testing.T, c *ssh.Client, who string) {
	t.Helper()
	conn, err := c.Dial("tcp", "echo:7")
	if err != nil {
		t.Errorf("%s: direct-tcpip to echo: %v", who, err)
		return
	}
	defer conn.Close()
	echoOn(t, conn, who)
}

func echoOn(t *testing.T, rw io.ReadWriter, who string) {
	t.Helper()
	msg := []byte("still served")
	if _, err := rw.Write(msg); err != nil {
		t.Errorf("%s: write: %v", who, err)
		return
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(rw, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Errorf("%s: echo got %q, %v; want %q", who, buf, err, msg)
	}
}

func isShortage(err error) (string, bool) {
	var oc *ssh.OpenChannelError
	if errors.As(err, &oc) && oc.Reason == ssh.ResourceShortage {
		return oc.Message, true
	}
	return "", false
}

// settleGoroutines waits until the goroutine count is at most want, and
// returns the count.
func settleGoroutines(want int) int {
	deadline := time.Now().Add(waitFor)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond) // no event tells a goroutine's end
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestChannelFloodOneConn is the review's attack: one authenticated
// connection opens 1,000 direct-tcpip channels at once (it reached 5,000
// before). The first MaxChannelsPerConn are served, the rest are refused
// with ResourceShortage, the connection's first channel and another user
// are still served, the refusals cost no goroutines and little memory,
// and closing channels makes room again.
func TestChannelFloodOneConn(t *testing.T) {
	const attempts = 1000
	a := newAuthority(t)
	logger, logs := captureLog()
	s := startServer(t, a, Config{Logger: logger})
	capacity := DefaultMaxChannelsPerConn
	base := runtime.NumGoroutine()
	heap0 := heapAlloc()

	alice := s.dial(t, "alice", userSigner(t, a, time.Time{}))
	first, err := alice.Dial("tcp", "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()

	var (
		mu      sync.Mutex
		held    []ssh.Channel
		refused int
		other   []error
		msgs    = map[string]bool{}
	)
	flood := func(n int) {
		var wg sync.WaitGroup
		work := make(chan struct{})
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					ch, err := openHold(alice)
					mu.Lock()
					if err == nil {
						held = append(held, ch)
					} else if msg, ok := isShortage(err); ok {
						refused++
						msgs[msg] = true
					} else {
						other = append(other, err)
					}
					mu.Unlock()
				}
			}()
		}
		for range n {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
	}
	flood(attempts - 1)
	t.Cleanup(func() {
		for _, ch := range held {
			ch.Close()
		}
	})
	if len(other) > 0 {
		t.Fatalf("%d channels failed otherwise than by the cap, first: %v", len(other), other[0])
	}
	if len(held) != capacity-1 || refused != attempts-capacity {
		t.Fatalf("got %d channels held and %d refused, want %d and %d", len(held), refused, capacity-1, attempts-capacity)
	}
	for msg := range msgs {
		if !strings.HasPrefix(msg, "warren: this connection has 256 channels open") {
			t.Errorf("refusal message %q, want it to say the connection's cap", msg)
		}
	}
	gHeld := runtime.NumGoroutine()
	heapHeld := heapAlloc()

	// A second wave, all refused, must cost nothing that lasts.
	refused = 0
	flood(attempts)
	if len(held) != capacity-1 || refused != attempts {
		t.Fatalf("second wave: %d held, %d refused; want %d held and all %d refused", len(held), refused, capacity-1, attempts)
	}
	gAfter := settleGoroutines(gHeld + 10)
	heapAfter := heapAlloc()
	t.Logf("goroutines: %d before, %d with %d channels held, %d after %d more refused", base, gHeld, capacity, gAfter, attempts)
	t.Logf("heap: %.1f MB before, %.1f MB with the channels held, %.1f MB after the refused wave",
		float64(heap0)/1e6, float64(heapHeld)/1e6, float64(heapAfter)/1e6)
	if gAfter > gHeld+10 {
		t.Errorf("refused channels left goroutines: %d with the channels held, %d after", gHeld, gAfter)
	}
	// Each held channel costs the client and the server a few goroutines
	// (the handler, request discarders); a refused one must cost none.
	if perChan := (gHeld - base) / capacity; perChan > 4 {
		t.Errorf("%d goroutines per held channel (%d for %d), want at most 4", perChan, gHeld-base, capacity)
	}
	if grow := int64(heapAfter) - int64(heapHeld); grow > 8<<20 {
		t.Errorf("the refused wave grew the heap by %d bytes", grow)
	}

	// The connection and its first channel go on; so does another user.
	echoOn(t, first, "alice's first channel")
	bob := s.dial(t, "bob", signerFor(t, a, "bob"))
	echoWorks(t, bob, "bob")
	if out, err := mustSession(t, bob).Output("ls"); err != nil || string(out) != "bob ran ls\n" {
		t.Errorf("bob's command: %q, %v", out, err)
	}
	// Sessions count too.
	if _, err := alice.NewSession(); err == nil {
		t.Error("alice opened a session over the cap")
	} else if _, ok := isShortage(err); !ok {
		t.Errorf("alice's session over the cap: %v, want a resource-shortage refusal", err)
	}

	// Closing a channel makes room for one, once the handler is done.
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(waitFor)
	for {
		ch, err := openHold(alice)
		if err == nil {
			held = append(held, ch)
			break
		}
		if _, ok := isShortage(err); !ok || time.Now().After(deadline) {
			t.Fatalf("after closing a channel: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the handler sees the close asynchronously
	}

	// A flood is logged in a line or two, not one per refusal.
	if n := len(logs.lines("too many open")); n == 0 || n > 3 {
		t.Errorf("%d log lines about refused channels, want 1 to 3:\n%s", n, strings.Join(logs.lines("too many open"), "\n"))
	}

	// Everything ends with the connection.
	for _, ch := range held {
		ch.Close()
	}
	held = nil
	first.Close()
	alice.Close()
	bob.Close()
	if g := settleGoroutines(base + 5); g > base+5 {
		t.Errorf("%d goroutines after the users left, %d before", g, base)
	}
}

func mustSession(t *testing.T, c *ssh.Client) *ssh.Session {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// TestChannelCapPerUser checks the cap over all of a user's connections:
// a user cannot get around the connection cap by opening more
// connections, other users are not affected, and closing makes room.
func TestChannelCapPerUser(t *testing.T) {
	a := newAuthority(t)
	s := startServer(t, a, Config{MaxChannelsPerConn: 4, MaxChannelsPerUser: 6})
	signer := userSigner(t, a, time.Time{})
	c1 := s.dial(t, "alice", signer)
	c2 := s.dial(t, "alice", signer)

	for i := range 4 {
		if _, err := openHold(c1); err != nil {
			t.Fatalf("channel %d on the first connection: %v", i, err)
		}
	}
	if _, err := openHold(c1); err == nil {
		t.Fatal("a fifth channel on one connection was accepted, want the connection cap")
	} else if msg, ok := isShortage(err); !ok || !strings.Contains(msg, "this connection has 4 channels open") {
		t.Fatalf("fifth channel: %v, want the connection cap", err)
	}
	for i := range 2 {
		if _, err := openHold(c2); err != nil {
			t.Fatalf("channel %d on the second connection: %v", i, err)
		}
	}
	if _, err := openHold(c2); err == nil {
		t.Fatal("a seventh channel for alice was accepted, want the user cap")
	} else if msg, ok := isShortage(err); !ok || !strings.Contains(msg, `user "alice" has 6 channels open`) {
		t.Fatalf("seventh channel: %v, want the user cap", err)
	}

	bob := s.dial(t, "bob", signerFor(t, a, "bob"))
	for i := range 4 {
		if _, err := openHold(bob); err != nil {
			t.Fatalf("bob's channel %d: %v", i, err)
		}
	}

	// Closing the first connection frees its four channels for alice.
	c1.Close()
	deadline := time.Now().Add(waitFor)
	for n := 0; n < 2; {
		_, err := openHold(c2)
		switch _, short := isShortage(err); {
		case err == nil:
			n++
		case !short || time.Now().After(deadline):
			t.Fatalf("after closing a connection: %v", err)
		default:
			time.Sleep(10 * time.Millisecond) // the handlers see the close asynchronously
		}
	}
	if _, err := openHold(c2); err == nil {
		t.Error("a fifth channel on the second connection was accepted, want the connection cap")
	}
}

// TestHugeTargetName is the review's 200 KB host name: it is refused
// before the Handler, with a short message, and nothing long is logged.
func TestHugeTargetName(t *testing.T) {
	a := newAuthority(t)
	logger, logs := captureLog()
	h := newHandler()
	s := startServer(t, a, Config{Handler: h, Logger: logger})
	c := s.dial(t, "alice", userSigner(t, a, time.Time{}))

	huge := strings.Repeat("a", 200<<10)
	tests := []struct {
		name, host string
		port       uint32
		want       string // the refusal message starts with this
	}{
		{"200 KB name", huge, 22, `warren: "` + strings.Repeat("a", 64) + `"... (204800 bytes) is not a resource name: `},
		{"terminal escape", "node1\x1b]0;owned\x07", 22, `warren: "node1\x1b]0;owned\a" is not a resource name`},
		{"empty", "", 22, `warren: "" is not a resource name`},
		{"user@host", "root@node1", 22, `warren: "root@node1" is not a resource name`},
		{"port out of range", "node1", 1 << 20, "warren: port 1048576 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openDirect(c, tt.host, tt.port)
			var oc *ssh.OpenChannelError
			if !errors.As(err, &oc) || oc.Reason != ssh.ConnectionFailed {
				t.Fatalf("got %v, want a connection-failed refusal", err)
			}
			if !strings.HasPrefix(oc.Message, tt.want) || len(oc.Message) > 300 {
				t.Errorf("message (%d bytes) %q, want at most 300 bytes starting %q", len(oc.Message), oc.Message, tt.want)
			}
			for _, r := range oc.Message {
				if r < 0x20 || r > 0x7e {
					t.Errorf("message %q holds %q, want printable ASCII", oc.Message, r)
					break
				}
			}
		})
	}
	h.mu.Lock()
	if len(h.targets) != 0 {
		t.Errorf("the handler saw %d refused targets", len(h.targets))
	}
	h.mu.Unlock()
	// A name that is merely unknown is the Handler's to refuse.
	if err := openDirect(c, "db", 5432); err == nil || !strings.Contains(err.Error(), "resource db is offline") {
		t.Errorf("unknown name: got %v, want the handler's refusal", err)
	}
	echoWorks(t, c, "alice after the refusals")

	log := logs.String()
	if strings.Contains(log, strings.Repeat("a", 100)) || strings.Contains(log, "\x1b") {
		t.Error("the log holds a long or raw name")
	}
	for _, l := range strings.Split(log, "\n") {
		if len(l) > 1024 {
			t.Errorf("log line of %d bytes: %.200s...", len(l), l)
		}
	}
	if lines := logs.lines("not a resource name"); len(lines) == 0 || !strings.Contains(lines[0], "host_bytes=204800") {
		t.Errorf("want the first refusal logged with its length, got %q", lines)
	}
}

// dialFrom opens a TCP connection to addr from the loopback address
// local (any of 127.0.0.0/8 works on Linux).
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: waitFor}
	return d.Dial("tcp", addr)
}

// loginFrom logs alice in from the loopback address local and runs a
// command.
func (s *server) loginFrom(t *testing.T, local string, signer ssh.Signer) {
	t.Helper()
	nc, err := dialFrom(local, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, s.addr, s.clientConfig("alice", signer, nil))
	if err != nil {
		nc.Close()
		t.Fatalf("alice from %s: %v", local, err)
	}
	c := ssh.NewClient(sc, chans, reqs)
	defer c.Close()
	if out, err := mustSession(t, c).Output("ls"); err != nil || string(out) != "alice ran ls\n" {
		t.Errorf("alice from %s: got %q, %v; want the command served", local, out, err)
	}
}

// idle opens n connections from local that never send a byte and sorts
// them by the server's first line: its SSH version (in its handshake) or
// a refusal, after which the server must close.
func idle(t *testing.T, local, addr string, n int) (held []net.Conn, refusals []string) {
	t.Helper()
	for range n {
		nc, err := dialFrom(local, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		_ = nc.SetReadDeadline(time.Now().Add(waitFor))
		r := bufio.NewReader(nc)
		line, err := r.ReadString('\n')
		switch {
		case strings.HasPrefix(line, "SSH-2.0-"):
			held = append(held, nc)
		case strings.HasPrefix(line, "warren: "):
			refusals = append(refusals, line)
			if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
				t.Errorf("after the refusal: %q, %v; want the connection closed", rest, err)
			}
			nc.Close()
		default:
			t.Fatalf("first line %q, %v; want a version or a refusal", line, err)
		}
	}
	return held, refusals
}

// TestIdleConnectionFlood is the review's pre-auth attack: 300 TCP
// connections from one address that never send a byte. The per-address
// cap holds MaxHandshakesPerIP of them in their handshake and closes the
// rest at once; a user from another address still logs in, the refusals
// are logged sampled, and the held ones cost a bounded number of
// goroutines.
func TestIdleConnectionFlood(t *testing.T) {
	a := newAuthority(t)
	logger, logs := captureLog()
	// A handshake timeout longer than the test, so the held connections
	// stay held.
	s := startServer(t, a, Config{Logger: logger, HandshakeTimeout: 5 * time.Minute})
	base := runtime.NumGoroutine()
	heap0 := heapAlloc()

	held, refusals := idle(t, "127.0.0.1", s.addr, 300)
	if len(held) != DefaultMaxHandshakesPerIP || len(refusals) != 300-DefaultMaxHandshakesPerIP {
		t.Fatalf("%d held and %d refused, want %d and %d", len(held), len(refusals), DefaultMaxHandshakesPerIP, 300-DefaultMaxHandshakesPerIP)
	}
	if want := "warren: too many connections from your address are logging in; try again in a moment\r\n"; refusals[0] != want {
		t.Errorf("refusal %q, want %q", refusals[0], want)
	}
	g := runtime.NumGoroutine()
	heap := heapAlloc()
	t.Logf("goroutines: %d before, %d with %d connections held in their handshake (%d refused); heap %.1f MB before, %.1f MB after",
		base, g, len(held), len(refusals), float64(heap0)/1e6, float64(heap)/1e6)
	if per := (g - base) / len(held); per > 6 {
		t.Errorf("%d goroutines per held connection (%d for %d), want a handful", per, g-base, len(held))
	}

	// Another address is not affected.
	s.loginFrom(t, "127.0.0.2", userSigner(t, a, time.Time{}))

	if n := len(logs.lines("refused before its handshake")); n == 0 || n > 3 {
		t.Errorf("%d log lines for %d refusals, want 1 to 3", n, len(refusals))
	}
	// Held connections that go away make room again.
	for _, nc := range held {
		nc.Close()
	}
	deadline := time.Now().Add(waitFor)
	for {
		more, refused := idle(t, "127.0.0.1", s.addr, 1)
		if len(more) == 1 {
			more[0].Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the held connections closed: %q", refused)
		}
		time.Sleep(10 * time.Millisecond) // the server sees the closes asynchronously
	}
}

// TestHandshakeCapOverall checks MaxHandshakes: idle connections from
// several addresses fill it, the next is refused whatever its address,
// and once they leave users log in again.
func TestHandshakeCapOverall(t *testing.T) {
	a := newAuthority(t)
	s := startServer(t, a, Config{MaxHandshakes: 8, MaxHandshakesPerIP: 4, HandshakeTimeout: 5 * time.Minute})
	var all []net.Conn
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		held, refused := idle(t, ip, s.addr, 4)
		if len(held) != 4 {
			t.Fatalf("from %s: %d held, want 4 (refused: %q)", ip, len(held), refused)
		}
		all = append(all, held...)
	}
	held, refused := idle(t, "127.0.0.5", s.addr, 1)
	if len(held) != 0 || len(refused) != 1 || !strings.Contains(refused[0], "too many connections are logging in to this proxy") {
		t.Fatalf("over the overall cap: %d held, refusals %q; want the overall refusal", len(held), refused)
	}
	for _, nc := range all {
		nc.Close()
	}
	signer := userSigner(t, a, time.Time{})
	deadline := time.Now().Add(waitFor)
	for {
		nc, err := dialFrom("127.0.0.2", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		sc, chans, reqs, err := ssh.NewClientConn(nc, s.addr, s.clientConfig("alice", signer, nil))
		if err == nil {
			ssh.NewClient(sc, chans, reqs).Close()
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatalf("alice still refused after the idle connections closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the server sees the closes asynchronously
	}
}

// TestLimitsConfig checks the defaults, that New leaves the caller's
// Config alone, and that negative limits are refused by name.
func TestLimitsConfig(t *testing.T) {
	a := newAuthority(t)
	cfg := Config{HostSigners: []ssh.Signer{newKey(t)}, UserCAs: []ssh.PublicKey{a.UserCA.PublicKey()}, Handler: newHandler(), MaxChannelsPerConn: 10}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := srv.cfg
	if got.MaxChannelsPerConn != 10 || got.MaxChannelsPerUser != 40 || got.MaxHandshakes != DefaultMaxHandshakes ||
		got.MaxHandshakesPerIP != DefaultMaxHandshakesPerIP || got.CheckTarget == nil {
		t.Errorf("limits after New: %d %d %d %d, want 10 40 %d %d and CheckTarget set", got.MaxChannelsPerConn, got.MaxChannelsPerUser,
			got.MaxHandshakes, got.MaxHandshakesPerIP, DefaultMaxHandshakes, DefaultMaxHandshakesPerIP)
	}
	if cfg.MaxChannelsPerUser != 0 || cfg.MaxHandshakes != 0 || cfg.CheckTarget != nil {
		t.Error("New wrote into the caller's Config")
	}

	_, err = New(Config{MaxChannelsPerConn: -1, MaxChannelsPerUser: -1, MaxHandshakes: -1, MaxHandshakesPerIP: -1})
	for _, want := range []string{"MaxChannelsPerConn", "MaxChannelsPerUser", "MaxHandshakes is", "MaxHandshakesPerIP"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("negative limits: got %v, want it to name %s", err, want)
		}
	}
}

// TestCustomCheckTarget checks that a Config.CheckTarget whose error
// repeats the raw name still yields a short, printable refusal.
func TestCustomCheckTarget(t *testing.T) {
	a := newAuthority(t)
	h := newHandler()
	s := startServer(t, a, Config{Handler: h, CheckTarget: func(host string) error {
		if host == "echo" {
			return nil
		}
		return fmt.Errorf("no such thing as %s", host)
	}})
	c := s.dial(t, "alice", userSigner(t, a, time.Time{}))
	err := openDirect(c, "\x1b[2J"+strings.Repeat("b", 10000), 22)
	var oc *ssh.OpenChannelError
	if !errors.As(err, &oc) || oc.Reason != ssh.ConnectionFailed {
		t.Fatalf("got %v, want a connection-failed refusal", err)
	}
	if len(oc.Message) > 400 || strings.ContainsAny(oc.Message, "\x1b") || !strings.Contains(oc.Message, "no such thing as ?[2Jbbb") {
		t.Errorf("message (%d bytes) %q, want a short, cleaned one with the checker's reason", len(oc.Message), oc.Message)
	}
	echoWorks(t, c, "alice")
}
