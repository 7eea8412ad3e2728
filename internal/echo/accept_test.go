package echo

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/accept/accepttest"
)

// TestServeSurvivesEMFILE: Serve waits out EMFILE errors instead of
// returning, then echoes; closing the listener ends it.
func TestServeSurvivesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &accepttest.EMFILEListener{Listener: ln, Fail: 3}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(fl, nil)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("echo after EMFILE errors: %q, %v", buf, err)
	}
	if n := fl.Failed(); n != 3 {
		t.Errorf("%d failed accepts, want 3", n)
	}
	ln.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the listener closed")
	}
}
