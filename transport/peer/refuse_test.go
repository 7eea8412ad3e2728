package peer

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRefusedClients: clients that may not use the peer link are refused
// with errors that say why, and the server goes on serving a good client
// after each.
func TestRefusedClients(t *testing.T) {
	checkGoroutines(t)
	ca, other := newCA(t), newCA(t)
	addr, _ := startServer(t, ServerConfig{
		Identity:  newIdentity(t, ca, "proxy-b"),
		Handler:   echoHandler("s"),
		AllowPeer: func(id string) bool { return id != "proxy-gone" },
		Logger:    testLogger(t),
	})
	good := newDialer(t, newIdentity(t, ca, "proxy-a"))

	// A client of another cluster that trusts ours: the server must refuse
	// its certificate itself.
	foreign := newIdentity(t, other, "proxy-x")
	foreign.CAs = x509.NewCertPool()
	foreign.CAs.AddCert(ca.TLSCert)
	foreign.CAs.AddCert(other.TLSCert)

	for _, tc := range []struct {
		name    string
		id      Identity
		wantErr []string // each must appear in the error
		refused bool     // a *RefusedError from the server, not a failed handshake
	}{
		{
			name:    "no client certificate",
			id:      Identity{CAs: ca.TLSCertPool()},
			wantErr: []string{"certificate required"},
		},
		{
			name:    "certificate from another CA",
			id:      foreign,
			wantErr: []string{"certificate"},
		},
		{
			name:    "server certificate from another CA",
			id:      newIdentity(t, other, "proxy-y"),
			wantErr: []string{"proxy-b", "is not from the cluster CA"},
		},
		{
			name:    "proxy not allowed",
			id:      newIdentity(t, ca, "proxy-gone"),
			wantErr: []string{`proxy "proxy-gone" may not use this peer link`, "not a current cluster member"},
			refused: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDialer(t, tc.id)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := d.Open(ctx, addr, "s")
			if err == nil {
				s.Close()
				t.Fatal("Open: got a stream, want a refusal")
			}
			t.Logf("Open: %v", err)
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Open error: got %q, want it to contain %q", err, want)
				}
			}
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Errorf("errors.Is(err, ErrRefused): got %v, want %v", got, tc.refused)
			}
			// The server still serves a good client.
			checkEcho(t, mustOpen(t, good, addr, "s"), 1<<20, 7)
		})
	}
}

// TestHandlerRefusal: a handler's refusal reaches Open with its reason (and
// its code when it is a gRPC status); a handler that accepts late makes
// Open wait for it.
func TestHandlerRefusal(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	release := make(chan struct{})
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		switch token {
		case "ok":
			return echoHandler("ok")(ctx, peerID, token, s)
		case "gone":
			return status.Error(codes.NotFound, "session gone expired 3s ago")
		case "late":
			<-release
			if err := Accept(s); err != nil {
				return err
			}
			return s.Close()
		case "nothing":
			return nil
		case "peer":
			if peerID != "proxy-a" {
				return errors.New("wrong peer id " + peerID)
			}
			return Accept(s)
		}
		return errors.New("unknown session token " + token)
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler, Logger: testLogger(t)})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))

	for _, tc := range []struct {
		token    string
		wantCode codes.Code
		wantMsg  string
	}{
		{"bogus", codes.PermissionDenied, "unknown session token bogus"},
		{"gone", codes.NotFound, "session gone expired 3s ago"},
		{"nothing", codes.OK, "closed the stream without accepting"},
	} {
		_, err := d.Open(ctxT(t), addr, tc.token)
		var re *RefusedError
		if !errors.As(err, &re) {
			t.Errorf("Open(%q): got %v, want a *RefusedError", tc.token, err)
			continue
		}
		if re.Code != tc.wantCode || !strings.Contains(re.Reason, tc.wantMsg) || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("Open(%q): got code %v reason %q, want %v and %q", tc.token, re.Code, re.Reason, tc.wantCode, tc.wantMsg)
		}
	}

	for _, token := range []string{"", strings.Repeat("x", maxTokenLen+1)} {
		if _, err := d.Open(ctxT(t), addr, token); err == nil || !strings.Contains(err.Error(), "token must be 1 to") {
			t.Errorf("Open with a %d-byte token: got %v, want a token error", len(token), err)
		}
	}

	// Open waits for a slow accept, and gives up with its ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := d.Open(ctx, addr, "late"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open with a 100ms deadline: got %v, want DeadlineExceeded", err)
	}
	opened := make(chan error, 1)
	go func() {
		s, err := d.Open(ctxT(t), addr, "late")
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	close(release)
	if err := <-opened; err != nil {
		t.Errorf("Open of a late accept: %v", err)
	}

	s := mustOpen(t, d, addr, "peer")
	s.Close()
	checkEcho(t, mustOpen(t, d, addr, "ok"), 1<<20, 3)
}

// TestPanicRecovered: a panicking handler fails its stream with Internal;
// the server lives on.
func TestPanicRecovered(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	handler := func(ctx context.Context, peerID, token string, s Stream) error {
		if token == "boom" {
			panic("handler bug")
		}
		return echoHandler("ok")(ctx, peerID, token, s)
	}
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: handler})
	d := newDialer(t, newIdentity(t, ca, "proxy-a"))
	_, err := d.Open(ctxT(t), addr, "boom")
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != codes.Internal {
		t.Fatalf("Open of a panicking handler: got %v, want a refusal with code Internal", err)
	}
	checkEcho(t, mustOpen(t, d, addr, "ok"), 1<<20, 5)
}

// TestUnknownMethod: other methods on the unknown-service handler are
// Unimplemented, even with our codec.
func TestUnknownMethod(t *testing.T) {
	checkGoroutines(t)
	ca := newCA(t)
	addr, _ := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: echoHandler("s")})
	cc, err := grpc.NewClient("passthrough:///"+addr, DialOptions(newIdentity(t, ca, "proxy-a"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cs, err := cc.NewStream(ctxT(t), &streamDesc, "/warren.peer.v1.Peer/Other", grpc.CallContentSubtype(codecName))
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(&inFrame{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: got %v, want Unimplemented", err)
	}
}

// TestServerConfigValidate: every problem is reported at once.
func TestServerConfigValidate(t *testing.T) {
	_, err := ServerOptions(ServerConfig{})
	if err == nil {
		t.Fatal("ServerOptions of an empty config: got nil error")
	}
	for _, want := range []string{"Identity.Cert", "Identity.CAs", "Handler"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
