// Package slowlink makes a long network path in user space for tests: a
// TCP relay on loopback that holds every byte for a fixed time in each
// direction. Tests of what distance changes (window growth, round-trip
// based routing) use it where network namespaces would be too heavy.
package slowlink

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Link is a running relay.
type Link struct {
	addr   string
	frozen chan struct{} // closed by Freeze
	done   chan struct{} // closed when the test ends
	once   sync.Once
}

// Addr is the address to dial instead of the target.
func (l *Link) Addr() string { return l.addr }

// Freeze makes the link silent, as a lost network is: from now on it
// passes no byte either way and closes nothing, until the test ends.
func (l *Link) Freeze() { l.once.Do(func() { close(l.frozen) }) }

// Start forwards connections to target through a new listener on
// 127.0.0.1, delaying every byte by oneWay in each direction (bandwidth is
// not limited), and returns its address. It stops with the test, closing
// every connection it made.
func Start(t testing.TB, target string, oneWay time.Duration) string {
	t.Helper()
	return New(t, target, oneWay).Addr()
}

// New is Start, returning the Link.
func New(t testing.TB, target string, oneWay time.Duration) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Link{addr: ln.Addr().String(), frozen: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		close(l.done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); l.delayCopy(out, in, oneWay) }()
			go func() { defer wg.Done(); l.delayCopy(in, out, oneWay) }()
		}
	}()
	return l
}

// delayCopy copies src to dst, each read written oneWay after it arrived.
// Reads are not held back while earlier ones wait, so the delay does not
// cap the rate; the queue between the two is bounded by what the
// endpoints' flow control lets be in flight. Once the link is frozen
// neither side moves until the test ends.
func (l *Link) delayCopy(dst, src net.Conn, oneWay time.Duration) {
	type piece struct {
		due  time.Time
		data []byte
	}
	q := make(chan piece, 4096)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			select {
			case <-l.frozen:
				<-l.done
				return
			default:
			}
			if n > 0 {
				q <- piece{time.Now().Add(oneWay), b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		select {
		case <-l.frozen:
			<-l.done
			for range q { // let the reader end
			}
			return
		default:
		}
		if _, err := dst.Write(p.data); err != nil {
			src.Close()
			for range q {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
