package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// startTCPAgent runs an agent process serving a tcp resource.
func (m *multi) startTCPAgent(name, resource, addr string, first int) *proc {
	return m.startAgentYAML(name, first, fmt.Sprintf("resources:\n  - name: %s\n    kind: tcp\n    addr: %s\n", resource, addr))
}

// sshClient opens a Go SSH connection to a proxy as alice.
func (m *multi) sshClient(t *testing.T, p *proxyProc) *ssh.Client {
	t.Helper()
	cf := clientFlags{proxy: p.User, identity: filepath.Join(m.dir, "alice"), knownHosts: filepath.Join(m.dir, "known_hosts")}
	c, _, err := cf.dialProxy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type sessionResult struct {
	start   time.Time
	latency time.Duration
	err     error // the session could not be opened
	ioErr   error // it opened, then broke (its agent died under it)
}

// TestHighAvailabilityUnderLoad: three agents serve one tcp resource on a
// 3-proxy cluster while many clients open new sessions without pause.
// SIGKILL one agent, SIGSTOP another, then bring both back: no new session
// fails while one agent is healthy.
func TestHighAvailabilityUnderLoad(t *testing.T) {
	m := newMulti(t, 3, "")
	m.waitMembers(3, m.proxies)
	echo := startEchoServer(t)
	agents := []*proc{
		m.startTCPAgent("agent-1", "echo", echo, 0),
		m.startTCPAgent("agent-2", "echo", echo, 1),
		m.startTCPAgent("agent-3", "echo", echo, 2),
	}
	healthy := func(n int) func() bool {
		return func() bool {
			for _, p := range m.proxies {
				out, _, _ := m.ssh(p.ID, "ls")
				if !strings.Contains(out, fmt.Sprintf("%d/3", n)) {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "3/3 agents healthy on every proxy", healthy(3))

	clients := 200
	if raceEnabled {
		clients = 60 // the processes run under the race detector
	}
	var conns []*ssh.Client
	for i := 0; i < clients; i++ {
		conns = append(conns, m.sshClient(t, m.proxies[i%3]))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var (
		mu      sync.Mutex
		results []sessionResult
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				err, ioErr := oneSession(c)
				mu.Lock()
				results = append(results, sessionResult{start: start, latency: time.Since(start), err: err, ioErr: ioErr})
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	sleep := func(d time.Duration) { time.Sleep(d) } // the load runs meanwhile
	sleep(3 * time.Second)
	killAt := time.Now()
	agents[0].cmd.Process.Signal(syscall.SIGKILL)
	<-agents[0].done
	agents[0].done <- nil
	sleep(4 * time.Second)
	stopAt := time.Now()
	agents[1].cmd.Process.Signal(syscall.SIGSTOP)
	sleep(9 * time.Second)
	agents[1].cmd.Process.Signal(syscall.SIGCONT)
	backAt := time.Now()
	agents[0] = m.startTCPAgent("agent-1", "echo", echo, 0)
	waitFor(t, "3/3 agents healthy again", healthy(3))
	sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	failed, broken := 0, 0
	for _, r := range results {
		if r.ioErr != nil {
			// A session in progress on the agent that was killed ends
			// with an error; that is expected, a failed connect is not.
			broken++
			near := func(at time.Time) bool {
				return r.start.After(at.Add(-time.Second)) && r.start.Before(at.Add(time.Second))
			}
			if !near(killAt) && !near(stopAt) {
				t.Errorf("session started at +%s broke after %s with no agent lost: %v", r.start.Sub(killAt).Round(time.Millisecond), r.latency, r.ioErr)
			}
		}
		if r.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("session started at +%s failed after %s: %v", r.start.Sub(killAt).Round(time.Millisecond), r.latency.Round(time.Millisecond), r.err)
			}
		}
	}
	// For each window: latencies of the sessions that started in it, how
	// many were slow (> 1 s, a failover), and when the last slow one
	// started after the fault: until then new sessions still met the
	// failed agent first.
	window := func(from, to time.Time) (n int, p50, p99, worst time.Duration, slow int, lastSlow time.Duration) {
		var ls []time.Duration
		for _, r := range results {
			if !r.start.Before(from) && r.start.Before(to) && r.ioErr == nil {
				ls = append(ls, r.latency)
				if r.latency > time.Second {
					slow++
					lastSlow = max(lastSlow, r.start.Sub(from))
				}
			}
		}
		if len(ls) == 0 {
			return
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
		return len(ls), ls[len(ls)/2], ls[len(ls)*99/100], ls[len(ls)-1], slow, lastSlow
	}
	for _, w := range []struct {
		name     string
		from, to time.Time
	}{
		{"before faults", time.Time{}, killAt},
		{"after SIGKILL agent-1", killAt, stopAt},
		{"after SIGSTOP agent-2", stopAt, backAt},
		{"after both returned", backAt, time.Now()},
	} {
		n, p50, p99, worst, slow, lastSlow := window(w.from, w.to)
		t.Logf("%-22s %5d sessions  p50 %-8s p99 %-8s max %-8s %3d slow (>1s), the last started %s after the fault",
			w.name, n, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), worst.Round(time.Millisecond), slow, lastSlow.Round(time.Millisecond))
	}
	t.Logf("%d clients, %d sessions, %d failed to connect, %d in progress on the killed agent ended with an error", clients, len(results), failed, broken)
}

// oneSession opens a direct-tcpip channel to echo through the proxy,
// sends a byte and reads it back. It returns a connect error, or an error
// of the session once open.
func oneSession(c *ssh.Client) (connectErr, ioErr error) {
	type result struct{ connect, io error }
	done := make(chan result, 1)
	go func() {
		conn, err := c.Dial("tcp", "echo:7")
		if err != nil {
			done <- result{connect: err}
			return
		}
		defer conn.Close()
		if _, err := conn.Write([]byte{'x'}); err != nil {
			done <- result{io: err}
			return
		}
		b := make([]byte, 1)
		_, err = io.ReadFull(conn, b)
		done <- result{io: err}
	}()
	select {
	case r := <-done:
		return r.connect, r.io
	case <-time.After(30 * time.Second):
		return fmt.Errorf("no answer in 30s"), nil
	}
}

// startEchoServer runs the dev cluster's echo server on a free port.
func startEchoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveEcho(ln)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}
