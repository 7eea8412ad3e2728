package streams

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// buffers returns the send and receive buffer sizes of c, as the kernel
// reports them.
func buffers(t *testing.T, c net.Conn) (snd, rcv int) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr, rerr error
	if err := raw.Control(func(fd uintptr) {
		snd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		rcv, rerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}); err != nil || serr != nil || rerr != nil {
		t.Fatal(err, serr, rerr)
	}
	return snd, rcv
}

func loopbackPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestShallowSetsBuffersOnAShortPath: both ends of a loopback connection
// get the shallow buffers (the kernel reports twice the figure set); a
// path at or above the bound keeps autotuning's buffers; a connection
// that is not TCP is left alone.
func TestShallowSetsBuffersOnAShortPath(t *testing.T) {
	a, b := loopbackPair(t)
	for _, c := range []net.Conn{a, b} {
		rtt, ok := Shallow(c)
		if !ok {
			t.Fatalf("Shallow on loopback (round trip %v): not set", rtt)
		}
		if snd, rcv := buffers(t, c); snd != 2*ShallowBuffer || rcv != 2*ShallowBuffer {
			t.Errorf("buffers %d and %d after Shallow, want %d each", snd, rcv, 2*ShallowBuffer)
		}
	}

	c, _ := loopbackPair(t)
	snd, rcv := buffers(t, c)
	if rtt, ok := shallow(c, 0); ok {
		t.Errorf("a round trip of %v at or above the bound: buffers set, want autotuning", rtt)
	}
	if s, r := buffers(t, c); s != snd || r != rcv {
		t.Errorf("buffers %d and %d, want %d and %d as before", s, r, snd, rcv)
	}

	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if _, ok := Shallow(p); ok {
		t.Error("Shallow on a pipe: set")
	}
}
