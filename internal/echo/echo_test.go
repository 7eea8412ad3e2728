package echo

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func TestServeEchoesAndStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(ln, func(b []byte) { copy(b, bytes.ToUpper(b)) })
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "HELLO" {
		t.Fatalf("got %q, %v", got, err)
	}
	ln.Close()
	<-done // returns only after closing the open connection
	if _, err := c.Read(got); err == nil {
		t.Fatal("connection still open after Serve returned")
	}
}
