package peer

import (
	"io"
	"testing"
)

// TestNoGoroutinesLeft: streams closed every way, a stream left open, then
// Dialer.Close and the server's Stop leave no goroutine behind.
func TestNoGoroutinesLeft(t *testing.T) {
	checkGoroutines(t) // runs after the cleanups below
	ca := newCA(t)
	addr, stop := startServer(t, ServerConfig{Identity: newIdentity(t, ca, "proxy-b"), Handler: echoHandler("s")})
	d := NewDialer(newIdentity(t, ca, "proxy-a"), nil)

	// Graceful: both directions end in-band, then Close (lingers).
	s := mustOpen(t, d, addr, "s")
	checkEcho(t, s, 1<<20, 1)
	// Abrupt: Close in the middle of the session.
	s = mustOpen(t, d, addr, "s")
	if _, err := s.Write([]byte("half a session")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Half-closed and then closed.
	s = mustOpen(t, d, addr, "s")
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Left open: Dialer.Close ends it.
	s = mustOpen(t, d, addr, "s")
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Dialer.Close: %v", err)
	}
	// The echo of "x" may have arrived before; then the stream fails.
	if _, err := io.Copy(io.Discard, s); err == nil {
		t.Error("Read on a stream of a closed Dialer: got EOF, want an error")
	}
	if _, err := d.Open(ctxT(t), addr, "s"); err == nil {
		t.Error("Open on a closed Dialer: got nil error")
	}
	stop()
}
