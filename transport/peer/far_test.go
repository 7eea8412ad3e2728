package peer

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	grpcpeer "google.golang.org/grpc/peer"

	"github.com/warren-proxy/warren/internal/slowlink"
)

// TestFarStreamsHaveConnectionsOfTheirOwn: streams to a proxy of the
// Dialer's own region share one connection; streams open at once to a
// proxy of another region each get their own, so that one session's bytes
// in a TCP connection's congestion window across an ocean never hold up
// another's keystroke. A stream that ends leaves its connection for the
// next one (sessions one after another reuse it), and Close closes them
// all (checkGoroutines).
func TestFarStreamsHaveConnectionsOfTheirOwn(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	var mu sync.Mutex
	from := map[string]string{} // token → the client address the server saw
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		p, ok := grpcpeer.FromContext(ctx)
		if !ok {
			return fmt.Errorf("no peer address for %s", token)
		}
		mu.Lock()
		from[token] = p.Addr.String()
		mu.Unlock()
		if err := Accept(s); err != nil {
			return err
		}
		_, err := io.Copy(io.Discard, s) // until the client's CloseWrite or Close
		return err
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	// Both ways lead to the same server; the Dialer takes the relay for a
	// proxy of another region.
	far := slowlink.Start(t, addr, time.Millisecond)
	d := NewDialer(newIdentity(t, ca, "proxy-a"), nil, WithFar(func(a string) (string, bool) { return "", a == far }))
	t.Cleanup(func() { d.Close() })
	seen := func(token string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			a, ok := from[token]
			mu.Unlock()
			if ok {
				return a
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("the server never saw %s", token)
		return ""
	}
	open := func(to, token string) Stream {
		t.Helper()
		s := mustOpen(t, d, to, token)
		seen(token)
		return s
	}

	near1, near2 := open(addr, "near-1"), open(addr, "near-2")
	if a, b := seen("near-1"), seen("near-2"); a != b {
		t.Errorf("two streams inside the region came from %s and %s, want one connection", a, b)
	}
	var fars []Stream
	conns := map[string]bool{}
	for i := range 4 {
		token := fmt.Sprintf("far-%d", i)
		fars = append(fars, open(far, token))
		conns[seen(token)] = true
	}
	if len(conns) != 4 {
		t.Errorf("4 streams open at once to another region came on %d connections, want 4: %v", len(conns), conns)
	}
	for _, s := range append(fars, near1, near2) {
		s.Close()
	}

	// One session after another: the connection is reused, not redialled.
	again := map[string]bool{}
	for i := range 6 {
		token := fmt.Sprintf("later-%d", i)
		s := open(far, token)
		again[seen(token)] = true
		s.Close()
	}
	if len(again) > maxFarIdle {
		t.Errorf("6 streams one after another came on %d connections, want at most %d (the idle ones reused)", len(again), maxFarIdle)
	}
	for a := range again {
		if !conns[a] {
			t.Errorf("a later stream came on a new connection %s; the idle ones were %v", a, conns)
		}
	}
}

// TestForgetDropsADepartedPeer: once a proxy leaves the cluster, the
// Dialer closes its connections to it that carry no stream at once, and
// the others when their last stream ends, without breaking those streams;
// nothing of it stays behind (goroutines back to where they were, with
// the Dialer still open), and a later Open dials afresh.
func TestForgetDropsADepartedPeer(t *testing.T) {
	ca := newCA(t)
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"),
		Handler: echoHandler("near", "far", "idle", "after")})
	far := slowlink.Start(t, addr, time.Millisecond)
	d := NewDialer(newIdentity(t, ca, "proxy-a"), nil, WithFar(func(a string) (string, bool) { return "", a == far }))
	t.Cleanup(func() { d.Close() })
	base := runtime.NumGoroutine()

	near, farS := mustOpen(t, d, addr, "near"), mustOpen(t, d, far, "far")
	mustOpen(t, d, far, "idle").Close() // leaves idle connections in the pool
	echo := func(s Stream, b byte) {
		t.Helper()
		if _, err := s.Write([]byte{b}); err != nil {
			t.Fatalf("write after Forget: %v", err)
		}
		got := []byte{0}
		if _, err := io.ReadFull(s, got); err != nil || got[0] != b {
			t.Fatalf("echo after Forget: %v %q", err, got)
		}
	}
	d.mu.Lock()
	var ccs []*grpc.ClientConn
	for _, fc := range d.conns {
		ccs = append(ccs, fc.cc)
	}
	for _, p := range d.farPool {
		for fc := range p.all {
			ccs = append(ccs, fc.cc)
		}
	}
	d.mu.Unlock()
	if len(ccs) < 3 {
		t.Fatalf("%d connections before Forget, want the near one, the far stream's and an idle one", len(ccs))
	}

	d.Forget(addr, far, "")
	echo(near, 1)
	echo(farS, 2)
	d.mu.Lock()
	kept, pools, forgotten := len(d.conns), len(d.farPool), len(d.forgotten)
	d.mu.Unlock()
	if kept != 0 || pools != 0 || forgotten != 2 {
		t.Errorf("after Forget: %d connections and %d pools kept, %d waiting for their streams; want 0, 0, 2", kept, pools, forgotten)
	}
	near.Close()
	farS.Close()
	deadline := time.Now().Add(10 * time.Second)
	for _, cc := range ccs {
		for cc.GetState() != connectivity.Shutdown {
			if time.Now().After(deadline) {
				t.Fatalf("a connection to the departed peer is %v, want closed", cc.GetState())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	d.mu.Lock()
	forgotten = len(d.forgotten)
	d.mu.Unlock()
	if forgotten != 0 {
		t.Errorf("%d connections still kept after their streams ended", forgotten)
	}
	for n := runtime.NumGoroutine(); n > base; n = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d with the Dialer open after Forget, want at most %d as before the peer was dialled", n, base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The address may come back (a proxy restarted): it is dialled again.
	echo(mustOpen(t, d, addr, "after"), 3)
}
