package revtunnel

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestBeforeHello: the hook sees the proxy's id from its certificate
// before any hello; a refusal closes the connection with no hello sent
// (the proxy registers nothing) and Dial's error wraps ErrProxyTaken and
// the hook's error. Allowed, the tunnel opens as without the hook.
func TestBeforeHello(t *testing.T) {
	a := newAuthority(t)
	errMine := errors.New("slot peer-0 holds it")
	tests := []struct {
		name   string
		refuse error
	}{
		{"refused", errMine},
		{"allowed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, baseServerConfig(t, a)) // certificate for proxyID
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			h := &recHandler{}
			var (
				mu   sync.Mutex
				seen []string
			)
			type dialed struct {
				c   *ClientConn
				err error
			}
			done := make(chan dialed, 1)
			go func() {
				c, _, err := Dial(ctx, ClientConfig{
					Addr: p.addr, AgentID: "agent-1", Signer: agentSigner(t, a, "agent-1"), Trust: Trust{CA: a.HostCA.PublicKey()},
					BeforeHello: func(id string) error {
						mu.Lock()
						defer mu.Unlock()
						seen = append(seen, id)
						return tt.refuse
					},
				}, Hello{Version: "test"})
				done <- dialed{c, err}
			}()
			// The handshake completes at the proxy either way; a refused
			// Dial may return before the proxy hands the connection over.
			var sc *ServerConn
			select {
			case sc = <-p.conns:
			case err := <-p.errs:
				t.Fatalf("proxy handshake failed: %v", err)
			case <-ctx.Done():
				t.Fatal("no tunnel reached the proxy")
			}
			served := make(chan struct{}) // closed when Serve returns
			go func() {
				defer close(served)
				_ = sc.Serve(h)
			}()
			defer func() {
				sc.Close()
				<-served
			}()
			d := <-done
			if d.c != nil {
				defer d.c.Close()
			}
			mu.Lock()
			if len(seen) != 1 || seen[0] != proxyID {
				t.Errorf("BeforeHello saw %q, want one call with %q", seen, proxyID)
			}
			mu.Unlock()

			if tt.refuse == nil {
				if d.err != nil {
					t.Fatalf("Dial with BeforeHello allowing: %v", d.err)
				}
				h.mu.Lock()
				defer h.mu.Unlock()
				if len(h.hellos) != 1 {
					t.Errorf("the proxy got %d hellos, want 1", len(h.hellos))
				}
				return
			}
			if !errors.Is(d.err, ErrProxyTaken) || !errors.Is(d.err, errMine) {
				t.Fatalf("Dial: got %v, want an error wrapping ErrProxyTaken and the hook's error", d.err)
			}
			if d.c != nil {
				t.Error("Dial returned a tunnel along with its error")
			}
			// The agent hung up: the proxy's side ends, having heard no hello.
			select {
			case <-served:
			case <-ctx.Done():
				t.Fatal("the refused connection stayed open at the proxy")
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.hellos) != 0 {
				t.Errorf("the proxy got %d hellos from a refused connection, want none", len(h.hellos))
			}
		})
	}
}
