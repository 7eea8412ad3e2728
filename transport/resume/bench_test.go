package resume

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-proxy/warren/transport/streams"
)

// BenchmarkStream moves bytes one way over a loopback TCP hop: plain TCP
// (the anchor), and through a resumable session on the same kind of hop.
// Per op: 1 MiB. Run: go test -run XXX -bench Stream ./transport/resume
func BenchmarkStream(b *testing.B) {
	const chunk = 32 << 10
	payload := make([]byte, chunk)
	run := func(b *testing.B, w io.Writer, r io.Reader) {
		b.SetBytes(1 << 20)
		done := make(chan int64)
		go func() {
			n, _ := io.CopyN(io.Discard, r, int64(b.N)<<20)
			done <- n
		}()
		b.ResetTimer()
		for i := 0; i < b.N*(1<<20)/chunk; i++ {
			if _, err := w.Write(payload); err != nil {
				b.Fatal(err)
			}
		}
		if n := <-done; n != int64(b.N)<<20 {
			b.Fatalf("read %d bytes", n)
		}
	}
	b.Run("tcp", func(b *testing.B) {
		a, c := tcpPair(b)
		run(b, a, c)
	})
	b.Run("resumable", func(b *testing.B) {
		a, c := tcpPair(b)
		reg := NewRegistry("agent-1", 4)
		served := make(chan *Conn, 1)
		go func() {
			s, _, err := reg.Accept(c)
			if err != nil {
				b.Error(err)
			}
			served <- s
		}()
		cl, err := Start(context.Background(), a, ClientConfig{SessionID: "bench", AgentID: "agent-1", Detach: time.Minute,
			Redial: func(context.Context) (streams.Stream, error) { return nil, io.EOF }})
		if err != nil {
			b.Fatal(err)
		}
		srv := <-served
		defer cl.Close()
		defer srv.Close()
		run(b, cl, srv)
	})
}

func tcpPair(tb testing.TB) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	c := <-got
	tb.Cleanup(func() { a.Close(); c.Close() })
	return a.(*net.TCPConn), c.(*net.TCPConn)
}
