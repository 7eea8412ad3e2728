package echo

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// emfileListener is a listener whose first fail Accepts fail as a process
// out of file descriptors does, before it accepts for real.
type emfileListener struct {
	net.Listener
	fail   int32
	failed atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.failed.Load() < l.fail {
		l.failed.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServeSurvivesEMFILE: Serve waits out EMFILE errors instead of
// returning, then echoes; closing the listener ends it.
func TestServeSurvivesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &emfileListener{Listener: ln, fail: 3}
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
	if n := fl.failed.Load(); n != 3 {
		t.Errorf("%d failed accepts, want 3", n)
	}
	ln.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the listener closed")
	}
}
