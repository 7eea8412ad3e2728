package peer

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWindowFollowsThePath pins the flow control that the package doc
// promises and that a gRPC upgrade could silently change: on a long path
// the windows grow past any fixed size by gRPC's BDP estimation, and a
// stalled reader still holds no more than the largest window.
//
// Both directions run over a relay that delays every byte by 100 ms each
// way. The writer first pushes warm bytes that the reader takes as they
// come (the windows limit the flow, so gRPC grows them); then the reader
// stops, and the writer goes on until flow control stops it. What it got
// out after the stop is the window: more than 1 MiB (the static window
// this package used to set, which capped a session at 1 MiB per round
// trip) and at most 16 MiB plus gRPC's write quota and one frame.
func TestWindowFollowsThePath(t *testing.T) {
	t.Parallel() // it waits on the relay's delay, mostly
	warm := int64(24 << 20)
	if raceEnabled || testing.Short() {
		warm = 12 << 20
	}
	const (
		oneWay    = 100 * time.Millisecond
		fixed     = 1 << 20                           // the old static stream window
		mostHeld  = maxWindow + 64<<10 + MaxFrameData // window, gRPC's write quota, a frame
		leastSeen = fixed + 64<<10 + MaxFrameData + 1 // more than the old window could take
		chunk     = MaxFrameData
	)
	ca := newCA(t)
	type side struct {
		wrote   atomic.Int64
		stopped chan struct{} // closed when the reader stopped reading
		release chan struct{} // closed when the test is done with the stream
	}
	sides := map[string]*side{}
	for _, dir := range []string{"client-writes", "server-writes"} {
		sides[dir] = &side{stopped: make(chan struct{}), release: make(chan struct{})}
	}
	// writeUntilStopped writes until flow control holds it and the test
	// releases it; readWarmThenStop reads warm bytes, then stops.
	writeUntilStopped := func(s Stream, sd *side) error {
		buf := make([]byte, chunk)
		for {
			n, err := s.Write(buf)
			sd.wrote.Add(int64(n))
			if err != nil {
				return err
			}
		}
	}
	readWarmThenStop := func(s Stream, sd *side) error {
		_, err := io.CopyN(io.Discard, s, warm)
		close(sd.stopped)
		<-sd.release
		return err
	}
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		sd := sides[token]
		if sd == nil {
			return errors.New("unknown token")
		}
		if err := Accept(s); err != nil {
			return err
		}
		if token == "client-writes" {
			return readWarmThenStop(s, sd)
		}
		go writeUntilStopped(s, sd) // ends when the stream closes
		<-sd.release
		return nil
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	far := delayRelay(t, addr, oneWay)
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))

	for _, dir := range []string{"client-writes", "server-writes"} {
		sd := sides[dir]
		s := mustOpen(t, d, far, dir)
		if dir == "client-writes" {
			go writeUntilStopped(s, sd) // ends when the stream closes
		} else {
			go readWarmThenStop(s, sd)
		}
		select {
		case <-sd.stopped:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: the warm bytes did not arrive within 2 minutes (%d written)", dir, sd.wrote.Load())
		}
		waitStalled(&sd.wrote, warm)
		held := sd.wrote.Load() - warm
		t.Logf("%s over %v each way: %d bytes held by the stopped reader", dir, oneWay, held)
		if held < leastSeen {
			t.Errorf("%s: the stopped reader took %d bytes, want more than %d: the window did not grow past a fixed 1 MiB (is gRPC's BDP estimation off?)", dir, held, leastSeen)
		}
		if held > mostHeld {
			t.Errorf("%s: the stopped reader took %d bytes, want at most %d: the window is not bounded", dir, held, mostHeld)
		}
		close(sd.release)
		s.Close()
	}
}

// delayRelay forwards connections to target through 127.0.0.1, delaying
// every byte by oneWay in each direction (bandwidth is not limited). It
// stops with the test.
func delayRelay(t *testing.T, target string, oneWay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(out, in, oneWay) }()
			go func() { defer wg.Done(); delayCopy(in, out, oneWay) }()
		}
	}()
	return ln.Addr().String()
}

// delayCopy copies src to dst, each read written oneWay after it arrived.
// The queue between them is bounded by what gRPC's flow control lets be
// in flight, plus TCP's buffers.
func delayCopy(dst, src net.Conn, oneWay time.Duration) {
	type piece struct {
		due  time.Time
		data []byte
	}
	q := make(chan piece, 4096)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- piece{time.Now().Add(oneWay), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		if _, err := dst.Write(p.data); err != nil {
			src.Close()
			for range q { // let the reader end
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
