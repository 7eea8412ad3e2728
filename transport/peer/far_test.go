package peer

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

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
