package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoSize is the size of the echo round trip: 256 MiB (about 4 s under the
// race detector), less with -short.
func echoSize() int64 {
	if testing.Short() {
		return 32 << 20
	}
	return 256 << 20
}

// checkEcho sends size random bytes through an echoing stream in writes of
// random sizes (1 byte to 64 KiB), half-closes, and checks that exactly the
// same bytes come back (sha256) followed by EOF.
func checkEcho(t *testing.T, s Stream, size int64, seed uint64) {
	t.Helper()
	var (
		wg      sync.WaitGroup
		sentSum []byte
		werr    error
	)
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		data := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
		sizes := rand.New(rand.NewPCG(seed, 1))
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for left := size; left > 0; {
			n := min(int64(1+sizes.IntN(len(buf))), left)
			_, _ = data.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := s.Write(buf[:n]); err != nil {
				werr = fmt.Errorf("Write: %w", err)
				return
			}
			left -= n
		}
		sentSum = h.Sum(nil)
		if err := s.CloseWrite(); err != nil {
			werr = fmt.Errorf("CloseWrite: %w", err)
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(h, onlyReader{s}, make([]byte, 32<<10))
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("reading the echo: %v after %d bytes", err, n)
	}
	if n != size {
		t.Fatalf("echo: got %d bytes, want %d", n, size)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sentSum) {
		t.Fatalf("echo: sha256 got %x, want %x", got, sentSum)
	}
	el := time.Since(start)
	t.Logf("echoed %d MiB both ways in %v (%.0f MiB/s each way)", size>>20, el.Round(time.Millisecond), float64(size)/(1<<20)/el.Seconds())
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestEchoLarge(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: echoHandler("s1")})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))
	checkEcho(t, mustOpen(t, d, addr, "s1"), echoSize(), 1)
}

// TestManyStreamsOneConn runs several echo sessions at once over the
// Dialer's one connection to the peer.
func TestManyStreamsOneConn(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: echoHandler("s1")})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := d.Open(ctxT(t), addr, "s1")
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			checkEcho(t, s, 4<<20+int64(i), uint64(i))
		}()
	}
	wg.Wait()
	if n := len(d.conns); n != 1 {
		t.Errorf("Dialer connections: got %d, want 1 (pooled per address)", n)
	}
}

// TestHalfCloseClientFirst: the client ends its direction, and the server
// keeps sending after reading that EOF.
func TestHalfCloseClientFirst(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	const reply = 3<<20 + 17
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		defer s.Close()
		got, err := io.ReadAll(s)
		if err != nil {
			return err
		}
		if string(got) != "request" {
			return fmt.Errorf("got request %q", got)
		}
		if _, err := s.Write(bytes.Repeat([]byte{'r'}, reply)); err != nil {
			return err
		}
		return s.CloseWrite()
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))
	s := mustOpen(t, d, addr, "t")
	if _, err := s.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatalf("second CloseWrite: got %v, want nil", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, errWriteClosed) {
		t.Fatalf("Write after CloseWrite: got %v, want %v", err, errWriteClosed)
	}
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	if len(got) != reply {
		t.Fatalf("reply: got %d bytes, want %d", len(got), reply)
	}
	if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF: got %d, %v; want 0, EOF", n, err)
	}
	s.Close()
}

// TestHalfCloseServerFirst: the server sends its EOF frame first and goes
// on reading what the client sends after it.
func TestHalfCloseServerFirst(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	const upload = 5<<20 + 3
	received := make(chan int64, 1)
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		defer s.Close()
		if _, err := s.Write([]byte("greeting")); err != nil {
			return err
		}
		if err := s.CloseWrite(); err != nil {
			return err
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, errWriteClosed) {
			return fmt.Errorf("server Write after CloseWrite: got %v, want %v", err, errWriteClosed)
		}
		n, err := io.Copy(io.Discard, s)
		received <- n
		return err
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))
	s := mustOpen(t, d, addr, "t")
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "greeting" {
		t.Fatalf("ReadAll: got %q, %v; want %q, nil", got, err, "greeting")
	}
	if _, err := s.Write(bytes.Repeat([]byte{'u'}, upload)); err != nil {
		t.Fatalf("Write after the server's EOF: %v", err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// Close right away: both directions ended in-band, so the upload still
	// in flight must reach the handler in full.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-received:
		if n != upload {
			t.Fatalf("server received %d bytes, want %d", n, upload)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler never saw the client's EOF")
	}
}

// TestSmallWritesRoundTrip: 1-byte writes each go out at once.
func TestSmallWritesRoundTrip(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: echoHandler("s")})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))
	s := mustOpen(t, d, addr, "s")
	const rounds = 1000
	buf := make([]byte, 1)
	start := time.Now()
	for i := range rounds {
		b := byte(i)
		if _, err := s.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		if buf[0] != b {
			t.Fatalf("round %d: got byte %d, want %d", i, buf[0], b)
		}
	}
	t.Logf("1-byte round trip: %v on average over %d rounds", time.Since(start)/rounds, rounds)
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, s); n != 0 || err != nil {
		t.Fatalf("after CloseWrite: got %d bytes, %v; want 0, nil", n, err)
	}
}

// TestCloseUnblocks: Close on either side ends Reads and Writes blocked in
// gRPC (no data; no flow-control window) on that side, and the other side
// sees the stream end.
func TestCloseUnblocks(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	type result struct {
		side string
		err  error
	}
	results := make(chan result, 4)
	wrote := new(atomic.Int64)
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		switch token {
		case "server-blocks-reading":
			_, err := s.Read(make([]byte, 10))
			results <- result{"server Read", err}
			return nil
		case "server-closes-blocked-reader":
			if err := Accept(s); err != nil {
				return err
			}
			done := make(chan error, 1)
			started := make(chan struct{})
			go func() {
				close(started)
				_, err := s.Read(make([]byte, 10))
				done <- err
			}()
			<-started // the Read is in gRPC or about to be; the client sends nothing
			s.Close()
			results <- result{"server Read after Close", <-done}
			return nil
		case "server-closes-blocked-writer":
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Write(buf)
					wrote.Add(int64(n))
					if err != nil {
						done <- err
						return
					}
				}
			}()
			// The client never reads: the writer stalls on the window.
			waitStalled(wrote, streamWindow)
			s.Close()
			results <- result{"server Write", <-done}
			return nil
		}
		return fmt.Errorf("unknown token %q", token)
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))

	wait := func(want string) result {
		t.Helper()
		select {
		case r := <-results:
			if r.side != want {
				t.Fatalf("got a result from %s, want %s", r.side, want)
			}
			return r
		case <-time.After(20 * time.Second):
			t.Fatalf("%s stayed blocked", want)
		}
		return result{}
	}

	// Client Close unblocks the client's own Read and Write; the handler's
	// Read fails as the RPC is cancelled.
	s, err := d.Open(ctxT(t), addr, "server-blocks-reading")
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 10))
		readErr <- err
	}()
	s.Close()
	if err := <-readErr; !errors.Is(err, ErrClosed) {
		t.Errorf("client Read after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("client Write after Close: got %v, want ErrClosed", err)
	}
	if r := wait("server Read"); r.err == nil || isClosedErr(r.err) {
		t.Errorf("server Read after the client's Close: got %v, want a cancellation error", r.err)
	}

	// Server Close unblocks a handler's Read waiting in gRPC; the client
	// sees the end of the stream.
	s1, err := d.Open(ctxT(t), addr, "server-closes-blocked-reader")
	if err != nil {
		t.Fatal(err)
	}
	if r := wait("server Read after Close"); !errors.Is(r.err, ErrClosed) {
		t.Errorf("server Read after Close: got %v, want ErrClosed", r.err)
	}
	if n, err := io.Copy(io.Discard, s1); n != 0 || err != nil {
		t.Errorf("client reading after the server's Close: got %d bytes, %v; want 0, EOF", n, err)
	}
	s1.Close()

	// Server Close unblocks a handler's Write stuck on flow control; the
	// client then reads what was sent and a clean end.
	s2, err := d.Open(ctxT(t), addr, "server-closes-blocked-writer")
	if err != nil {
		t.Fatal(err)
	}
	if r := wait("server Write"); !errors.Is(r.err, ErrClosed) {
		t.Errorf("server Write after Close: got %v, want ErrClosed", r.err)
	}
	n, err := io.Copy(io.Discard, s2)
	if err != nil {
		t.Errorf("client reading after the server's Close: %v", err)
	}
	if n > wrote.Load() || n < streamWindow {
		t.Errorf("client read %d bytes, server wrote %d", n, wrote.Load())
	}
	s2.Close()
}

// waitStalled returns once a writer counting into wrote has written at
// least least bytes and then made no progress for 200 ms (or after 20 s).
func waitStalled(wrote *atomic.Int64, least int64) {
	last, since := int64(-1), time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := wrote.Load()
		if n != last {
			last, since = n, time.Now()
			continue
		}
		if n >= least && time.Since(since) >= 200*time.Millisecond {
			return
		}
	}
}

// TestMemoryBounded pushes a large transfer each way through one stream
// whose readers are slow, or stall, for part of it, and checks that the
// heap stays small: flow control, not buffering, absorbs the difference.
func TestMemoryBounded(t *testing.T) {
	size := int64(1 << 30)
	if raceEnabled || testing.Short() {
		size = 64 << 20 // the full 1 GiB runs without -race and -short
	}
	const bound = 64 << 20
	checkGoroutines(t)
	ca := newCA(t)
	type result struct {
		n   int64
		err error
	}
	serverRead := make(chan result, 1)
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		defer s.Close()
		werr := make(chan error, 1)
		go func() { werr <- pump(s, size) }()
		n, err := slowDrain(s, size)
		serverRead <- result{n, err}
		return errors.Join(err, <-werr)
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))

	// Start from a clean heap: two collections empty the sync.Pools
	// (buffers of earlier tests) too.
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	start := time.Now()
	s := mustOpen(t, d, addr, "bulk")
	werr := make(chan error, 1)
	go func() { werr <- pump(s, size) }()
	n, err := slowDrain(s, size)
	if err != nil {
		t.Fatalf("client reading: %v after %d bytes", err, n)
	}
	if err := <-werr; err != nil {
		t.Fatalf("client writing: %v", err)
	}
	r := <-serverRead
	el := time.Since(start)
	close(stopSampling)
	<-sampled
	s.Close()
	if r.err != nil || r.n != size {
		t.Fatalf("server read %d bytes (%v), want %d", r.n, r.err, size)
	}
	if n != size {
		t.Fatalf("client read %d bytes, want %d", n, size)
	}
	t.Logf("moved %d MiB each way in %v with slow and stalled readers; HeapInuse before %.1f MiB, peak %.1f MiB (bound %d MiB)",
		size>>20, el.Round(time.Millisecond), float64(base)/(1<<20), float64(peak.Load())/(1<<20), bound>>20)
	if p := peak.Load(); p > bound {
		t.Errorf("peak HeapInuse: got %.1f MiB, want at most %d MiB", float64(p)/(1<<20), bound>>20)
	}
}

// pump writes size bytes in 32 KiB writes, then half-closes.
func pump(s Stream, size int64) error {
	buf := make([]byte, 32<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		if _, err := s.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return s.CloseWrite()
}

// slowDrain reads to EOF, sleeping a millisecond per read for the first
// 16 MiB and stalling for half a second halfway through size.
func slowDrain(r io.Reader, size int64) (int64, error) {
	const slowUntil = 16 << 20
	buf := make([]byte, 32<<10)
	var n int64
	stalled := false
	for {
		if n < slowUntil {
			time.Sleep(time.Millisecond)
		}
		if !stalled && n >= size/2 {
			time.Sleep(500 * time.Millisecond)
			stalled = true
		}
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
