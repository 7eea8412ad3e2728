package revtunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The busy line reads back as the wait it was written with; a hint too
// large (or too long to be a number) is capped, one that is no number is
// the default, and anything but a busy line as the very first line, in
// the first maxPreface bytes, is no busy answer at all.
func TestParseBusy(t *testing.T) {
	for _, d := range []time.Duration{0, 250 * time.Millisecond, time.Second, MaxBusyRetryAfter} {
		got, ok := ParseBusy(BusyLine(d))
		if !ok || got != d {
			t.Errorf("ParseBusy(BusyLine(%s)) = %s, %v", d, got, ok)
		}
	}
	if line := string(BusyLine(1500 * time.Millisecond)); line != "warren-busy retry-after-ms=1500\r\n" {
		t.Errorf("BusyLine(1.5s) = %q", line)
	}
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"warren-busy retry-after-ms=700\n", 700 * time.Millisecond, true},
		{"warren-busy retry-after-ms=700\r\nSSH-2.0-x\r\n", 700 * time.Millisecond, true},
		{"warren-busy\r\n", DefaultBusyRetryAfter, true},
		{"warren-busy future=1 retry-after-ms=20\r\n", 20 * time.Millisecond, true},
		{"warren-busy retry-after-ms=86400000\r\n", MaxBusyRetryAfter, true},
		{"warren-busy retry-after-ms=99999999999999999999999999\r\n", MaxBusyRetryAfter, true},
		{"warren-busy retry-after-ms=-5\r\n", DefaultBusyRetryAfter, true},
		{"warren-busy retry-after-ms=1e9\r\n", DefaultBusyRetryAfter, true},
		{"warren-busy retry-after-ms=\r\n", DefaultBusyRetryAfter, true},
		{"warren-busy retry-after-ms=700", 0, false}, // no end of line: cut off
		{"warren-busyness retry-after-ms=700\r\n", 0, false},
		{"SSH-2.0-warren-tunnel\r\nwarren-busy retry-after-ms=700\r\n", 0, false},
		{"hello\r\nwarren-busy retry-after-ms=700\r\n", 0, false},
		{"GET / HTTP/1.0\r\n\r\n", 0, false},
		{"\r\n", 0, false},
		{"", 0, false},
		{"warren-busy" + strings.Repeat(" ", maxPreface) + "retry-after-ms=1\r\n", 0, false},
		{strings.Repeat("\x00\xff", 1<<16), 0, false},
	}
	for _, c := range cases {
		got, ok := ParseBusy([]byte(c.in))
		if ok != c.ok || got != c.want {
			t.Errorf("ParseBusy(%.60q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// FuzzParseBusy: whatever a peer sends first, ParseBusy neither panics
// nor asks for more than MaxBusyRetryAfter, nor for less than nothing.
func FuzzParseBusy(f *testing.F) {
	f.Add([]byte("warren-busy retry-after-ms=700\r\n"))
	f.Add([]byte("warren-busy retry-after-ms=99999999999999999999\r\n"))
	f.Add([]byte("warren-busy\n"))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, ok := ParseBusy(b)
		if ok && (d < 0 || d > MaxBusyRetryAfter) {
			t.Fatalf("ParseBusy(%q) = %s", b, d)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseBusy(%q) = %s but no busy line", b, d)
		}
	})
}

// A peer that sends a megabyte before (or instead of) a version line
// costs the client no more than maxPreface bytes kept.
func TestPrefaceIsBounded(t *testing.T) {
	server, client := net.Pipe()
	go func() {
		server.Write(bytes.Repeat([]byte("warren-busy "), 1<<17))
		server.Close()
	}()
	pc := &prefaceConn{Conn: client}
	n, err := io.Copy(io.Discard, pc)
	if err != nil || n != 12<<17 {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if len(pc.buf) != maxPreface || cap(pc.buf) > 2*maxPreface {
		t.Fatalf("kept %d bytes (capacity %d), want %d", len(pc.buf), cap(pc.buf), maxPreface)
	}
	if err := pc.busy(io.EOF); err != io.EOF {
		t.Fatalf("an endless first line read as %v, want no busy answer", err)
	}
}

// What a proxy turning a connection away sends makes Dial fail with a
// *BusyError carrying its hint (capped), over real TCP; anything else
// before the close is a plain failure. Nothing hangs or panics.
func TestDialSeesBusy(t *testing.T) {
	serve := func(t *testing.T, send func(net.Conn)) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				send(nc)
				nc.Close()
			}
		}()
		return ln.Addr().String()
	}
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, _, err := Dial(ctx, ClientConfig{Addr: addr, AgentID: "a1", Signer: newKey(t)}, Hello{})
		return err
	}
	for _, c := range []struct {
		name string
		send func(net.Conn)
		want time.Duration // 0: no busy answer
	}{
		{"busy", func(nc net.Conn) { WriteBusy(nc, 1200*time.Millisecond) }, 1200 * time.Millisecond},
		{"a huge hint", func(nc net.Conn) { nc.Write([]byte("warren-busy retry-after-ms=" + strings.Repeat("9", 100) + "\r\n")) }, MaxBusyRetryAfter},
		{"nothing", func(net.Conn) {}, 0},
		{"garbage lines", func(nc net.Conn) { nc.Write([]byte("hello\r\nworld\r\n")) }, 0},
		{"an endless line", func(nc net.Conn) {
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write(bytes.Repeat([]byte("warren-busy "), 1<<16))
		}, 0},
		{"an oversized busy line", func(nc net.Conn) {
			nc.Write([]byte("warren-busy " + strings.Repeat("x=y ", 200) + "retry-after-ms=1\r\n"))
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := dial(serve(t, c.send))
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			var be *BusyError
			switch {
			case c.want == 0 && errors.As(err, &be):
				t.Fatalf("read as busy: %v", err)
			case c.want != 0 && !errors.As(err, &be):
				t.Fatalf("not read as busy: %v", err)
			case c.want != 0 && be.RetryAfter != c.want:
				t.Fatalf("retry after %s, want %s", be.RetryAfter, c.want)
			}
			t.Log(err)
		})
	}
}

// A busy line before a real server's version is skipped by an SSH client
// that knows nothing of it (RFC 4253 §4.2): the handshake goes on.
func TestBusyLineIsAPreVersionLine(t *testing.T) {
	a := newAuthority(t)
	srvCfg := &ssh.ServerConfig{NoClientAuth: true}
	srvCfg.AddHostKey(hostSigner(t, a, proxyID, time.Time{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(BusyLine(time.Second))
		if sc, _, _, err := ssh.NewServerConn(c, srvCfg); err == nil {
			sc.Wait()
		}
	}()
	nc, err := net.DialTimeout("tcp", ln.Addr().String(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	conn, _, _, err := ssh.NewClientConn(nc, "x", &ssh.ClientConfig{User: "u", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatalf("handshake after a busy line: %v", err)
	}
	conn.Close()
}
