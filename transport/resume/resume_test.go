package resume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/slowlink"
	"github.com/warren-proxy/warren/transport/streams"
)

// waitFor bounds every wait here, so a bug fails a test instead of hanging.
const waitFor = 30 * time.Second

// rig is an agent's registry behind a real TCP listener on loopback, and
// the hops the entry side dialled to it.
type rig struct {
	t      *testing.T
	reg    *Registry
	ln     net.Listener
	served chan *Conn

	mu      sync.Mutex
	hops    []net.Conn
	links   []*slowlink.Link
	through bool // dial through a slowlink, to freeze
	refuse  bool // dials fail
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, reg: NewRegistry("agent-1", 16), ln: ln, served: make(chan *Conn, 16)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if s, _, err := r.reg.Accept(c); err == nil && s != nil {
					r.served <- s
				}
			}()
		}
	}()
	return r
}

func (r *rig) dial(ctx context.Context) (streams.Stream, error) {
	r.mu.Lock()
	through, refuse := r.through, r.refuse
	r.mu.Unlock()
	if refuse {
		return nil, errors.New("no path (test)")
	}
	addr := r.ln.Addr().String()
	var link *slowlink.Link
	if through {
		link = slowlink.New(r.t, addr, 0)
		addr = link.Addr()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.hops = append(r.hops, c)
	if link != nil {
		r.links = append(r.links, link)
	}
	r.mu.Unlock()
	return c, nil
}

// cut breaks the newest hop, as a dying peer proxy does.
func (r *rig) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hops[len(r.hops)-1].Close()
}

func (r *rig) freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.links[len(r.links)-1].Freeze()
}

func (r *rig) start(t *testing.T, cfg ClientConfig) (*Client, *Conn) {
	t.Helper()
	if cfg.SessionID == "" {
		cfg.SessionID = "s1"
	}
	cfg.AgentID = "agent-1"
	if cfg.Detach == 0 {
		cfg.Detach = time.Minute
	}
	cfg.Redial = r.dial
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	first, err := r.dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Start(ctx, first, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	select {
	case s := <-r.served:
		t.Cleanup(func() { s.Close() })
		return cl, s
	case <-time.After(waitFor):
		t.Fatal("the agent side never got the session")
	}
	return nil, nil
}

// send writes n pseudo-random bytes in writes of random sizes, then
// half-closes, and returns their hash.
func send(w interface {
	io.Writer
	CloseWrite() error
}, n int, seed uint64) ([32]byte, error) {
	rng := rand.New(rand.NewPCG(seed, seed))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for n > 0 {
		m := min(n, 1+rng.IntN(len(buf)))
		for i := range buf[:m] {
			buf[i] = byte(rng.Uint32())
		}
		h.Write(buf[:m])
		if _, err := w.Write(buf[:m]); err != nil {
			return [32]byte{}, err
		}
		n -= m
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, w.CloseWrite()
}

// drain reads r to EOF and returns the hash and the count.
func drain(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// exchangeBoth sends n bytes each way at once and checks both arrive whole,
// while during() runs.
func exchangeBoth(t *testing.T, a, b *Conn, n int, during func()) {
	t.Helper()
	type res struct {
		sum [32]byte
		n   int64
		err error
	}
	var aSent, bSent [32]byte
	var aErr, bErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); aSent, aErr = send(a, n, 1) }()
	go func() { defer wg.Done(); bSent, bErr = send(b, n, 2) }()
	readInto := func(c *Conn, out chan<- res) {
		s, m, err := drain(c)
		out <- res{s, m, err}
	}
	atB, atA := make(chan res, 1), make(chan res, 1)
	go readInto(b, atB)
	go readInto(a, atA)
	if during != nil {
		during()
	}
	timeout := time.After(waitFor)
	var ra, rb res
	for i := 0; i < 2; i++ {
		select {
		case rb = <-atB:
		case ra = <-atA:
		case <-timeout:
			t.Fatalf("transfer did not finish; a holds %d, b holds %d bytes", a.Buffered(), b.Buffered())
		}
	}
	wg.Wait()
	if aErr != nil || bErr != nil {
		t.Fatalf("send: %v / %v", aErr, bErr)
	}
	if rb.err != nil || ra.err != nil {
		t.Fatalf("receive: %v / %v", rb.err, ra.err)
	}
	if rb.n != int64(n) || rb.sum != aSent {
		t.Errorf("a→b: %d bytes arrived, want %d, hash match %v", rb.n, n, rb.sum == aSent)
	}
	if ra.n != int64(n) || ra.sum != bSent {
		t.Errorf("b→a: %d bytes arrived, want %d, hash match %v", ra.n, n, ra.sum == bSent)
	}
}

func TestBytesIntactWithoutFailure(t *testing.T) {
	r := newRig(t)
	cl, srv := r.start(t, ClientConfig{})
	exchangeBoth(t, cl.Conn, srv, 8<<20, nil)
	if cl.Hops() != 1 {
		t.Errorf("%d hops without a failure", cl.Hops())
	}
}

// TestBytesSurviveBrokenHops breaks the hop again and again during a large
// transfer each way: every byte arrives once, in order.
func TestBytesSurviveBrokenHops(t *testing.T) {
	r := newRig(t)
	var resumed sync.WaitGroup
	cuts := 6
	resumed.Add(cuts)
	cl, srv := r.start(t, ClientConfig{Window: 256 << 10, Resumed: func(time.Duration, int) { resumed.Done() }})
	exchangeBoth(t, cl.Conn, srv, 24<<20, func() {
		for range cuts {
			time.Sleep(30 * time.Millisecond)
			hops := cl.Hops()
			r.cut()
			deadline := time.Now().Add(waitFor)
			for cl.Hops() == hops && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
	if cl.Hops() != cuts+1 {
		t.Errorf("%d hops after %d cuts, want %d", cl.Hops(), cuts, cuts+1)
	}
	cl.Close()
	srv.Close()
	for _, c := range []*Conn{cl.Conn, srv} {
		select {
		case <-c.Done():
		case <-time.After(waitFor):
			t.Fatal("a side did not end after Close")
		}
		if err := c.Err(); err != nil {
			t.Errorf("ended with %v", err)
		}
	}
	if n := r.reg.Len(); n != 0 {
		t.Errorf("registry holds %d sessions after the end", n)
	}
}

// TestSilentHopIsDropped freezes the hop (no byte, no close): both ends
// notice, the entry dials again, the session goes on.
func TestSilentHopIsDropped(t *testing.T) {
	r := newRig(t)
	r.through = true
	resumed := make(chan time.Duration, 1)
	cl, srv := r.start(t, ClientConfig{Resumed: func(d time.Duration, _ int) { resumed <- d }})
	if _, err := cl.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(srv, buf); err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now()
	r.freeze()
	// Written into the frozen hop: lost there, and replayed.
	if _, err := cl.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-resumed:
		t.Logf("resumed %s after the freeze (stalled %s)", time.Since(frozenAt).Round(time.Millisecond), d.Round(time.Millisecond))
	case <-time.After(waitFor):
		t.Fatal("never resumed after the hop froze")
	}
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "during" {
		t.Fatalf("after resume read %q, %v", buf, err)
	}
}

// TestHalfCloseAcrossAResume: one side ends its writing, the hop breaks,
// the other side keeps writing; the EOF and the bytes after it arrive.
func TestHalfCloseAcrossAResume(t *testing.T) {
	r := newRig(t)
	cl, srv := r.start(t, ClientConfig{})
	if _, err := cl.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := cl.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	r.cut()
	reply := bytes.Repeat([]byte("reply "), 100000)
	if _, err := srv.Write(reply); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	back, err := io.ReadAll(cl)
	if err != nil || !bytes.Equal(back, reply) {
		t.Fatalf("client read %d bytes (want %d), %v", len(back), len(reply), err)
	}
}

// TestStoppedReaderHoldsAWindow: a reader that stops holds at most a window
// at each end, and the writer waits; nothing is lost when it reads again.
func TestStoppedReaderHoldsAWindow(t *testing.T) {
	r := newRig(t)
	const window = 128 << 10
	cl, srv := r.start(t, ClientConfig{Window: window})
	total := 16 * window
	sent := make(chan [32]byte, 1)
	go func() {
		s, _ := send(cl, total, 3)
		sent <- s
	}()
	// Wait until the writer is stuck on the full window.
	deadline := time.Now().Add(waitFor)
	for cl.Buffered() < window && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if n := cl.Buffered(); n > window {
		t.Errorf("the writer's end holds %d bytes, more than the window %d", n, window)
	}
	if n := srv.Buffered(); n > window {
		t.Errorf("the stopped reader's end holds %d bytes, more than the window %d", n, window)
	}
	t.Logf("stopped reader: writer holds %d, reader holds %d bytes (window %d)", cl.Buffered(), srv.Buffered(), window)
	got, n, err := drain(srv)
	if err != nil || n != int64(total) || got != <-sent {
		t.Fatalf("after reading again: %d bytes, %v, hash match %v", n, err, got == <-sent)
	}
}

// TestDetachedSessionEnds: with no path back, both ends give up after the
// detach time, with ErrDetached.
func TestDetachedSessionEnds(t *testing.T) {
	r := newRig(t)
	detached := make(chan struct{}, 1)
	cl, srv := r.start(t, ClientConfig{Detach: 300 * time.Millisecond, Detached: func(error) { detached <- struct{}{} }})
	r.mu.Lock()
	r.refuse = true
	r.mu.Unlock()
	r.cut()
	for _, c := range []*Conn{cl.Conn, srv} {
		select {
		case <-c.Done():
		case <-time.After(waitFor):
			t.Fatal("a detached session never ended")
		}
		if err := c.Err(); !errors.Is(err, ErrDetached) {
			t.Errorf("ended with %v, want ErrDetached", err)
		}
	}
	<-detached
	if _, err := cl.Write([]byte("x")); !errors.Is(err, ErrDetached) {
		t.Errorf("write after the end: %v", err)
	}
	if n := r.reg.Len(); n != 0 {
		t.Errorf("registry holds %d sessions", n)
	}
}

// rawHop dials the rig's agent directly and sends hello.
func rawHop(t *testing.T, r *rig, h hello) (welcome, error) {
	t.Helper()
	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(h.marshal()); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(waitFor))
	return readWelcome(c)
}

// TestForgedAndReplayedTokensRefused: a resume needs the session's secret,
// the agent's identity and an attempt number not used before.
func TestForgedAndReplayedTokensRefused(t *testing.T) {
	r := newRig(t)
	cl, srv := r.start(t, ClientConfig{SessionID: "victim"})
	refusedWith := func(name string, h hello, want string) {
		t.Helper()
		w, err := rawHop(t, r, h)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if w.status != statusRefused || !bytes.Contains([]byte(w.msg), []byte(want)) {
			t.Errorf("%s: status %d %q, want a refusal saying %q", name, w.status, w.msg, want)
		}
	}
	var zero [TokenSize]byte
	forged := hello{mode: modeResume, id: "victim", window: DefaultWindow, detach: time.Minute, gen: 1, token: resumeToken(zero, "victim", "agent-1", 1)}
	refusedWith("forged token", forged, "bad resume token")
	other := hello{mode: modeResume, id: "victim", window: DefaultWindow, detach: time.Minute, gen: 1, token: resumeToken(cl.secret, "victim", "agent-2", 1)}
	refusedWith("token for another agent", other, "bad resume token")
	unknown := hello{mode: modeResume, id: "nobody", window: DefaultWindow, detach: time.Minute, gen: 1, token: resumeToken(cl.secret, "nobody", "agent-1", 1)}
	refusedWith("unknown session", unknown, "does not hold session")
	taken := hello{mode: modeStart, id: "victim", window: DefaultWindow, detach: time.Minute, token: cl.secret}
	refusedWith("start of a held session", taken, "already held")

	// The session's own resume works once; the same attempt again is a
	// replay.
	r.cut()
	deadline := time.Now().Add(waitFor)
	for cl.Hops() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if cl.Hops() < 2 {
		t.Fatal("the session never resumed")
	}
	cl.mu.Lock()
	used := cl.gen
	cl.mu.Unlock()
	replay := hello{mode: modeResume, id: "victim", window: DefaultWindow, detach: time.Minute, gen: used, token: resumeToken(cl.secret, "victim", "agent-1", used)}
	refusedWith("replayed token", replay, "already used")

	// The session is untouched by all of it.
	if _, err := cl.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// TestGarbageHopRefused: bytes that are no Hello get the hop closed, and
// the registry is untouched.
func TestGarbageHopRefused(t *testing.T) {
	r := newRig(t)
	for _, junk := range []string{"SSH-2.0-OpenSSH_9.6\r\n", "WRS1\x07\x01", "WRS1\x01\x00", "WRS1\x01\x05a b c" + string(make([]byte, 60))} {
		c, err := net.Dial("tcp", r.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(junk))
		c.SetReadDeadline(time.Now().Add(waitFor))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%q: the agent answered %d bytes instead of closing", junk, n)
		}
		c.Close()
	}
	if n := r.reg.Len(); n != 0 {
		t.Errorf("registry holds %d sessions after garbage", n)
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := hello{mode: modeResume, id: "s-12", received: 1 << 40, window: DefaultWindow, detach: 90 * time.Second, gen: 7}
	h.token[3] = 9
	got, err := readHello(bytes.NewReader(h.marshal()))
	if err != nil || got != h {
		t.Fatalf("got %+v, %v; want %+v", got, err, h)
	}
	w := welcome{status: statusOK, received: 12345}
	gw, err := readWelcome(bytes.NewReader(w.marshal()))
	if err != nil || gw != w {
		t.Fatalf("got %+v, %v; want %+v", gw, err, w)
	}
}

// TestEndLostWithItsHop: the agent's end closes cleanly and its last frames
// are lost with the hop. The entry side resumes only to hear the end: its
// reader gets every byte and a clean EOF, not an error.
func TestEndLostWithItsHop(t *testing.T) {
	r := newRig(t)
	r.through = true
	cl, srv := r.start(t, ClientConfig{})
	if _, err := srv.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(cl, buf); err != nil {
		t.Fatal(err)
	}
	// Wait for the client's ack, so the agent's end holds nothing.
	deadline := time.Now().Add(waitFor)
	for srv.Buffered() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.freeze()
	srv.CloseWrite()
	srv.Close()
	select {
	case <-srv.Done():
	case <-time.After(waitFor):
		t.Fatal("the agent's end did not end")
	}
	if r.reg.Len() != 0 || !r.reg.Holds("s1") {
		t.Fatalf("registry: %d live, holds s1: %v; want the ended session to linger", r.reg.Len(), r.reg.Holds("s1"))
	}
	rest, err := io.ReadAll(cl)
	if err != nil || len(rest) != 0 {
		t.Fatalf("after the lost end: read %q, %v; want a clean EOF", rest, err)
	}
	if cl.Hops() != 2 {
		t.Errorf("%d hops; want the end learned over a second one", cl.Hops())
	}
	cl.Close()
	select {
	case <-cl.Done():
	case <-time.After(waitFor):
		t.Fatal("the entry's end did not end")
	}
	if err := cl.Err(); err != nil {
		t.Errorf("entry's end: %v", err)
	}
}
