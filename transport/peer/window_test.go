package peer

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/slowlink"
)

// TestWindowFollowsThePath pins the flow control that the package doc
// promises and that a gRPC upgrade could silently change: a Dialer's
// connection to another region, and the far server it dials, grow the
// windows of what they receive past any fixed size by gRPC's BDP
// estimation, and a stalled reader still holds no more than the largest
// window; every other window stays static, the peer port's server's
// included.
//
// Each case runs over a relay that delays every byte by 100 ms each way.
// The writer first pushes warm bytes that the reader takes as they come
// (the windows limit the flow, so an estimating gRPC grows them); then the
// reader stops, and the writer goes on until flow control stops it. What
// it got out after the stop is the reader's window.
func TestWindowFollowsThePath(t *testing.T) {
	t.Parallel() // it waits on the relay's delay, mostly
	warm := int64(24 << 20)
	if raceEnabled || testing.Short() {
		warm = 12 << 20
	}
	const (
		maxWindow = 16 << 20 // grpc-go's bdpLimit: the most BDP estimation grows a window to
		oneWay    = 100 * time.Millisecond
		slack     = 64<<10 + MaxFrameData // gRPC's write quota and a frame
		chunk     = MaxFrameData
	)
	type side struct {
		wrote   atomic.Int64
		stopped chan struct{} // closed when the reader stopped reading
		release chan struct{} // closed when the test is done with the stream
	}
	cases := []struct {
		token             string
		far, serverWrites bool
		least, most       int64 // bytes the stopped reader may hold
	}{
		// Downloads from the far proxy: the Dialer's window grows; uploads
		// to it: the far server's.
		{"far-download", true, true, streamWindow + slack + 1, maxWindow + slack},
		{"far-upload", true, false, streamWindow + slack + 1, maxWindow + slack},
		// Inside the region, both ways: static windows.
		{"near-download", false, true, 0, streamWindow + slack},
		{"near-upload", false, false, 0, streamWindow + slack},
	}
	sides := map[string]*side{}
	for _, c := range cases {
		sides[c.token] = &side{stopped: make(chan struct{}), release: make(chan struct{})}
	}
	// writeUntilStopped writes until flow control holds it and the stream
	// closes; readWarmThenStop reads warm bytes, then stops until released.
	writeUntilStopped := func(s Stream, sd *side) {
		buf := make([]byte, chunk)
		for {
			n, err := s.Write(buf)
			sd.wrote.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	readWarmThenStop := func(s Stream, sd *side) error {
		_, err := io.CopyN(io.Discard, s, warm)
		close(sd.stopped)
		<-sd.release
		return err
	}
	ca := newCA(t)
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		sd := sides[token]
		if sd == nil {
			return errors.New("unknown token")
		}
		if err := Accept(s); err != nil {
			return err
		}
		if strings.HasSuffix(token, "-upload") {
			return readWarmThenStop(s, sd)
		}
		go writeUntilStopped(s, sd)
		<-sd.release
		return nil
	}
	cfg := ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler}
	addr, _ := startServer(t, cfg)
	farAddr, _ := startFarServer(t, cfg)
	// The far proxy's peer port, and its far server, which the Dialer dials
	// for it; the near proxy is as slow, but the Dialer takes it for its own
	// region.
	far := slowlink.Start(t, addr, oneWay)
	farServer := slowlink.Start(t, farAddr, oneWay)
	near := slowlink.Start(t, addr, oneWay)
	id := newIdentity(t, ca, "proxy-a")
	d := NewDialer(id, nil, WithFar(func(a string) (string, bool) { return farServer, a == far }))
	t.Cleanup(func() { d.Close() })

	for _, c := range cases {
		sd := sides[c.token]
		to := near
		if c.far {
			to = far
		}
		s := mustOpen(t, d, to, c.token)
		if c.serverWrites {
			go readWarmThenStop(s, sd)
		} else {
			go writeUntilStopped(s, sd)
		}
		select {
		case <-sd.stopped:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: the warm bytes did not arrive within 2 minutes (%d written)", c.token, sd.wrote.Load())
		}
		waitStalled(&sd.wrote, warm)
		held := sd.wrote.Load() - warm
		t.Logf("%s over %v each way: %d bytes held by the stopped reader", c.token, oneWay, held)
		if held < c.least {
			t.Errorf("%s: the stopped reader took %d bytes, want more than %d: the window did not grow past the static 1 MiB (is gRPC's BDP estimation off?)", c.token, held, c.least-1)
		}
		if held > c.most {
			t.Errorf("%s: the stopped reader took %d bytes, want at most %d", c.token, held, c.most)
		}
		close(sd.release)
		s.Close()
	}
}
