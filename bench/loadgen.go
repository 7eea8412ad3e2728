package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/echo"
)

// Load drives new sessions through proxies the way many users would: a
// fixed set of SSH connections to proxies, and on them, without pause,
// new channels to a resource that each carry one byte there and back.
// It stops at Count sessions or after Duration, whichever comes first.
type Load struct {
	Clients  []*ssh.Client // sessions go round-robin over these
	Target   string        // host:port of the direct-tcpip channel, e.g. "echo:7"
	Workers  int           // concurrent sessions in flight
	Count    int           // stop after this many sessions (0: no limit)
	Duration time.Duration // stop after this long (0: no limit; then Count must be set)
	Pause    time.Duration // between one worker's sessions
	Timeout  time.Duration // one session's limit (default 30 s)
}

// Session is one measured session.
type Session struct {
	Start   time.Time
	Latency time.Duration // channel open to the byte's return
	Err     error         // the session could not be opened
	IOErr   error         // it opened, then broke (its agent died under it)
}

// Run drives the load until Count, Duration or ctx ends it.
func (l Load) Run(ctx context.Context) ([]Session, error) {
	if len(l.Clients) == 0 || l.Workers < 1 || (l.Count <= 0 && l.Duration <= 0) {
		return nil, errors.New("load: needs clients, workers, and a count or a duration")
	}
	if l.Timeout <= 0 {
		l.Timeout = 30 * time.Second
	}
	if l.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.Duration)
		defer cancel()
	}
	var (
		mu      sync.Mutex
		results []Session
		next    int
		wg      sync.WaitGroup
	)
	// take hands out the next session's number, or false when done.
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil || (l.Count > 0 && next >= l.Count) {
			return 0, false
		}
		next++
		return next - 1, true
	}
	for w := 0; w < l.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, ok := take()
				if !ok {
					return
				}
				s := oneSession(l.Clients[n%len(l.Clients)], l.Target, l.Timeout)
				mu.Lock()
				results = append(results, s)
				mu.Unlock()
				if l.Pause > 0 {
					sleepCtx(ctx, l.Pause)
				}
			}
		}()
	}
	wg.Wait()
	return results, nil
}

// oneSession opens a channel to target, sends a byte and reads it back.
func oneSession(c *ssh.Client, target string, timeout time.Duration) Session {
	s := Session{Start: time.Now()}
	done := make(chan struct{})
	var conn net.Conn
	go func() {
		defer close(done)
		var err error
		if conn, err = c.Dial("tcp", target); err != nil {
			s.Err = err
			return
		}
		if _, err := conn.Write([]byte{'x'}); err != nil {
			s.IOErr = err
			return
		}
		b := make([]byte, 1)
		_, s.IOErr = io.ReadFull(conn, b)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		// Leave the goroutine to finish on its own when the client closes.
		return Session{Start: s.Start, Latency: timeout, Err: fmt.Errorf("no answer in %s", timeout)}
	}
	if conn != nil {
		conn.Close()
	}
	s.Latency = time.Since(s.Start)
	return s
}

// summarize counts failures and gathers latencies of sessions that
// worked, optionally only those started in [from, to).
func summarize(ss []Session, from, to time.Time) (ok Durations, failed, broken int) {
	for _, s := range ss {
		if (!from.IsZero() && s.Start.Before(from)) || (!to.IsZero() && !s.Start.Before(to)) {
			continue
		}
		switch {
		case s.Err != nil:
			failed++
		case s.IOErr != nil:
			broken++
		default:
			ok = append(ok, s.Latency)
		}
	}
	return ok, failed, broken
}

// echoServer serves TCP echo on ip until stopped; the upstream of the
// tcp resources the load generators use.
func echoServer(ip string, stop *cleanups) (string, error) {
	return serveEchoOn(ip, nil, stop)
}

// serveEchoOn runs echo.Serve on a new listener on ip, stopped by stop.
func serveEchoOn(ip string, edit func([]byte), stop *cleanups) (string, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		echo.Serve(ln, edit)
	}()
	stop.add(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), nil
}
