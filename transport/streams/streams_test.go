package streams

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// waitFor bounds every wait in these tests, so a bug fails a test instead
// of hanging it.
const waitFor = 10 * time.Second

// Compile-time checks: ChannelConn is a net.Conn, and the streams Pipe is
// used with are Streams that can half-close.
var (
	_ net.Conn    = (*ChannelConn)(nil)
	_ Stream      = (*ChannelConn)(nil)
	_ closeWriter = (*ChannelConn)(nil)
	_ closeWriter = (*net.TCPConn)(nil)
	_ closeWriter = ssh.Channel(nil)
)

// tcpPair returns both ends of a real loopback TCP connection. Both are
// closed at cleanup.
func tcpPair(tb testing.TB) (client, server *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ac := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ac <- accepted{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	a := <-ac
	if a.err != nil {
		tb.Fatal(a.err)
	}
	tb.Cleanup(func() {
		c.Close()
		a.c.Close()
	})
	return c.(*net.TCPConn), a.c.(*net.TCPConn)
}

// piped connects user ↔ a =Pipe= b ↔ upstream over two TCP connections and
// returns the outer ends and the channel Pipe's result arrives on.
func piped(tb testing.TB) (user, upstream *net.TCPConn, result <-chan Result) {
	tb.Helper()
	user, a := tcpPair(tb)
	b, upstream := tcpPair(tb)
	res := make(chan Result, 1)
	go func() { res <- Pipe(a, b) }()
	return user, upstream, res
}

func waitResult(t *testing.T, res <-chan Result) Result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(waitFor):
		t.Fatal("Pipe did not return")
		return Result{}
	}
}

// readAll reads c to EOF, bounded by waitFor.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("read to EOF: %v", err)
	}
	return b
}

func TestPipeBothWays(t *testing.T) {
	tests := []struct {
		name     string
		up, down int // bytes user→upstream, upstream→user
	}{
		{"empty", 0, 0},
		{"one byte each way", 1, 1},
		{"one way only", 100 << 10, 0},
		{"larger than the buffer", 1<<20 + 7, 3<<20 + 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, upstream, res := piped(t)
			up := randomBytes(t, tt.up)
			down := randomBytes(t, tt.down)
			var wg sync.WaitGroup
			var gotUp, gotDown []byte
			wg.Add(4)
			go func() { defer wg.Done(); writeAndCloseWrite(t, user, up) }()
			go func() { defer wg.Done(); writeAndCloseWrite(t, upstream, down) }()
			go func() { defer wg.Done(); gotUp = readAll(t, upstream) }()
			go func() { defer wg.Done(); gotDown = readAll(t, user) }()
			wg.Wait()
			if !bytes.Equal(gotUp, up) {
				t.Errorf("upstream got %d bytes, want the %d the user sent", len(gotUp), len(up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("user got %d bytes, want the %d upstream sent", len(gotDown), len(down))
			}
			r := waitResult(t, res)
			if r.AtoB != int64(tt.up) || r.BtoA != int64(tt.down) || r.Err != nil {
				t.Errorf("got result %+v, want AtoB %d, BtoA %d, no error", r, tt.up, tt.down)
			}
		})
	}
}

func writeAndCloseWrite(t *testing.T, c *net.TCPConn, b []byte) {
	_ = c.SetWriteDeadline(time.Now().Add(waitFor))
	if _, err := c.Write(b); err != nil {
		t.Errorf("write: %v", err)
		return
	}
	if err := c.CloseWrite(); err != nil {
		t.Errorf("close write: %v", err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPipeHalfClose checks that EOF crosses the pipe while the other
// direction keeps flowing, as a request/response protocol needs.
func TestPipeHalfClose(t *testing.T) {
	user, upstream, res := piped(t)

	writeAndCloseWrite(t, user, []byte("request"))
	if got := string(readAll(t, upstream)); got != "request" {
		t.Fatalf("upstream got %q, want %q then EOF", got, "request")
	}

	// The user has finished sending; the response still flows, in parts.
	_ = user.SetReadDeadline(time.Now().Add(waitFor))
	for _, part := range []string{"response part 1;", "response part 2;"} {
		if _, err := upstream.Write([]byte(part)); err != nil {
			t.Fatalf("upstream write after the user's EOF: %v", err)
		}
		buf := make([]byte, len(part))
		if _, err := io.ReadFull(user, buf); err != nil || string(buf) != part {
			t.Fatalf("user got %q, %v; want %q", buf, err, part)
		}
	}
	select {
	case r := <-res:
		t.Fatalf("Pipe returned %+v while upstream was still sending", r)
	default:
	}

	if err := upstream.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest := readAll(t, user); len(rest) != 0 {
		t.Errorf("user got %q after the last part, want EOF", rest)
	}
	r := waitResult(t, res)
	if want := int64(len("request")); r.AtoB != want || r.BtoA != 32 || r.Err != nil {
		t.Errorf("got result %+v, want AtoB %d, BtoA 32, no error", r, want)
	}
}

// TestPipeErrorEndsBoth checks that a reset on either side ends the whole
// pipe: the other side is closed and the error is reported.
func TestPipeErrorEndsBoth(t *testing.T) {
	tests := []struct {
		name      string
		resetUser bool // else upstream resets
	}{
		{"user resets", true},
		{"upstream resets", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, upstream, res := piped(t)
			// Some traffic first, so the pipe is mid-session.
			if _, err := user.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			_ = upstream.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := io.ReadFull(upstream, buf); err != nil {
				t.Fatal(err)
			}

			gone, survivor := upstream, user
			if tt.resetUser {
				gone, survivor = user, upstream
			}
			reset(t, gone)
			// The survivor sees its connection end although it never
			// closed its side and the pipe never saw an EOF from it.
			_ = survivor.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := io.ReadAll(survivor); err != nil && isTimeout(err) {
				t.Fatalf("the surviving side was not closed: %v", err)
			}
			r := waitResult(t, res)
			if r.Err == nil {
				t.Errorf("got result %+v, want the reset reported as Err", r)
			}
		})
	}
}

func reset(t *testing.T, c *net.TCPConn) {
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestPipeWithoutCloseWrite checks a stream that cannot half-close: EOF on
// the other side closes it, so its peer still sees EOF.
func TestPipeWithoutCloseWrite(t *testing.T) {
	user, a := tcpPair(t)
	b, peer := net.Pipe()
	defer peer.Close()
	res := make(chan Result, 1)
	go func() { res <- Pipe(a, b) }()

	writeAndCloseWrite(t, user, []byte("bye"))
	_ = peer.SetReadDeadline(time.Now().Add(waitFor))
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != "bye" {
		t.Errorf("peer got %q, %v; want %q then EOF", got, err, "bye")
	}
	r := waitResult(t, res)
	if r.AtoB != 3 || r.Err != nil {
		t.Errorf("got result %+v, want AtoB 3, no error", r)
	}
	if rest := readAll(t, user); len(rest) != 0 {
		t.Errorf("user got %q, want EOF", rest)
	}
}

// TestPipeSSHChannel runs Pipe between a TCP connection and a real SSH
// channel, as the proxy and the agent do, and checks that half-close
// crosses the channel both ways.
func TestPipeSSHChannel(t *testing.T) {
	client, server := sshChannelPair(t)
	user, a := tcpPair(t)
	res := make(chan Result, 1)
	go func() { res <- Pipe(a, client) }()

	writeAndCloseWrite(t, user, []byte("ping"))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "ping" {
		t.Fatalf("channel peer got %q, %v; want %q then EOF", got, err, "ping")
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatalf("write to the channel after its EOF: %v", err)
	}
	if err := server.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := string(readAll(t, user)); got != "pong" {
		t.Errorf("user got %q, want %q then EOF", got, "pong")
	}
	r := waitResult(t, res)
	if r.AtoB != 4 || r.BtoA != 4 || r.Err != nil {
		t.Errorf("got result %+v, want 4 bytes each way, no error", r)
	}
}

// sshChannelPair opens a session channel over a loopback SSH connection
// and returns the client's and the server's end.
func sshChannelPair(t *testing.T) (client, server ssh.Channel) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	scfg := &ssh.ServerConfig{NoClientAuth: true}
	scfg.AddHostKey(hostKey)
	cConn, sConn := tcpPair(t)

	type served struct {
		conn *ssh.ServerConn
		ch   ssh.Channel
		err  error
	}
	sc := make(chan served, 1)
	go func() {
		conn, chans, reqs, err := ssh.NewServerConn(sConn, scfg)
		if err != nil {
			sc <- served{err: err}
			return
		}
		go ssh.DiscardRequests(reqs)
		nch, ok := <-chans
		if !ok {
			sc <- served{conn: conn, err: errors.New("no channel")}
			return
		}
		go func() {
			for nch := range chans {
				_ = nch.Reject(ssh.Prohibited, "one channel only")
			}
		}()
		ch, creqs, err := nch.Accept()
		if err == nil {
			go ssh.DiscardRequests(creqs)
		}
		sc <- served{conn, ch, err}
	}()
	ccfg := &ssh.ClientConfig{User: "u", HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()), Timeout: waitFor}
	conn, chans, reqs, err := ssh.NewClientConn(cConn, "pipe-test", ccfg)
	if err != nil {
		t.Fatal(err)
	}
	c := ssh.NewClient(conn, chans, reqs)
	t.Cleanup(func() { c.Close() })
	ch, creqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(creqs)
	s := <-sc
	if s.conn != nil {
		t.Cleanup(func() { s.conn.Close() })
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	return ch, s.ch
}

func TestChannelConnAddrs(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	c := &ChannelConn{Local: local}
	if got := c.LocalAddr(); got != local {
		t.Errorf("LocalAddr: got %v, want %v", got, local)
	}
	if got := c.RemoteAddr(); got == nil || got.Network() != "warren-tunnel" || got.String() != "tunnel" {
		t.Errorf("RemoteAddr with none set: got %v, want the tunnel placeholder", got)
	}
	for _, set := range []func(time.Time) error{c.SetDeadline, c.SetReadDeadline, c.SetWriteDeadline} {
		if err := set(time.Now()); err != nil {
			t.Errorf("deadline setter: got %v, want nil", err)
		}
	}
}

// BenchmarkPipe measures throughput through Pipe between two loopback TCP
// connections, one way.
func BenchmarkPipe(b *testing.B) {
	const chunk = 64 << 10
	user, upstream, res := piped(b)
	data := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()

	werr := make(chan error, 1)
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := user.Write(data); err != nil {
				werr <- err
				return
			}
		}
		werr <- user.CloseWrite()
	}()
	buf := make([]byte, chunk)
	var n int64
	for {
		m, err := upstream.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := <-werr; err != nil {
		b.Fatal(err)
	}
	if want := int64(b.N) * chunk; n != want {
		b.Fatalf("read %d bytes, want %d", n, want)
	}
	upstream.CloseWrite()
	if r := <-res; r.Err != nil {
		b.Fatal(r.Err)
	}
}
