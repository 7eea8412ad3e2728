package clustertest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
)

// firehose serves TCP connections that are written to without pause, and
// counts the bytes the kernel took from it: what a session's path holds
// when its reader stops (the windows and socket buffers between them).
type firehose struct {
	addr  string
	wrote atomic.Int64
}

func startFirehose(t *testing.T) *firehose {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &firehose{addr: ln.Addr().String()}
	chunk := make([]byte, 32<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns and closed
	var conns []net.Conn
	closed := false
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				for {
					n, err := c.Write(chunk)
					f.wrote.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return f
}

// stallBound is the most a stopped reader's path may take from its
// upstream: the user's SSH channel window and the tunnel channel's (2 MiB
// each), the peer stream's window (1 MiB), and the one socket that fills,
// the agent's from the upstream (its send buffer, 4 MiB here, and its
// receive buffer, which the kernel keeps growing by collapsing its queue,
// a burst a second, up to tcp_rmem's maximum: 32 MiB here), with room to
// spare. Without flow control a firehose pushes hundreds of MiB a second.
const stallBound = 64 << 20

// stallWatch is how long the stopped session's upstream is watched.
const stallWatch = 5 * time.Second

// TestStoppedReaderStallsOnlyItsSession: a session whose reader stops
// holds a bounded number of bytes in its path (its upstream's writes
// stall), and another session on the same user connection, the same
// agent tunnel and (entered on the other proxy) the same peer link goes
// on answering; the stopped session resumes when read again.
func TestStoppedReaderStallsOnlyItsSession(t *testing.T) {
	hose := startFirehose(t)
	echo := startEcho(t)
	c := New(t, Options{Proxies: 2, Agents: map[string][]agent.ResourceConfig{
		"agent-1": {{Name: "hose", Kind: "tcp", Addr: hose.addr}, {Name: "echo", Kind: "tcp", Addr: echo}},
	}})
	holder := tunnelHolder(t, c, "agent-1")
	for _, entry := range c.Proxies {
		name := "peer link"
		if entry == holder {
			name = "local tunnel"
		}
		t.Run(name, func(t *testing.T) {
			cl := goClientTo(t, c, entry.UserAddr())
			stopped, err := cl.Dial("tcp", "hose:7")
			if err != nil {
				t.Fatal(err)
			}
			defer stopped.Close()
			start := hose.wrote.Load()
			time.Sleep(stallWatch)
			last := hose.wrote.Load()
			held := last - start
			t.Logf("%s: the stopped session's path took %.1f MiB from its upstream in %v", name, float64(held)/(1<<20), stallWatch)
			if held > stallBound {
				t.Errorf("%s: %d MiB in the stopped session's path, want at most %d: flow control does not hold end to end", name, held>>20, stallBound>>20)
			}

			// Another session on the same connection, tunnel and peer link.
			live, err := cl.Dial("tcp", "echo:7")
			if err != nil {
				t.Fatalf("a second session beside the stopped one: %v", err)
			}
			defer live.Close()
			done := make(chan error, 1)
			go func() {
				b := []byte{0}
				for i := range 100 {
					b[0] = byte(i)
					if _, err := live.Write(b); err != nil {
						done <- err
						return
					}
					if _, err := io.ReadFull(live, b); err != nil || b[0] != byte(i) {
						done <- err
						return
					}
				}
				done <- nil
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("echo beside the stopped session: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("100 round trips beside the stopped session did not finish in 30 s: it stalls the shared path")
			}

			// The stopped session was only waiting.
			if _, err := io.CopyN(io.Discard, stopped, 8<<20); err != nil {
				t.Fatalf("the stopped session, read again: %v", err)
			}
		})
	}
}
