package clustertest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/transport/peer"
)

// An agent of region us, configured with a proxy of eu only, homes to
// us's proxy once it learns of it; falls back to eu when us's proxy dies;
// and goes home again when it returns, moving its tunnel without breaking
// a session that runs through the old one.
func TestAgentHomesToItsRegion(t *testing.T) {
	agentLogs := newLogCounter()
	opts := Options{
		Proxies: 2,
		Runner:  RunProcesses,
		Region: func(i int) string {
			if i == 1 {
				return "eu"
			}
			return "us"
		},
		Agents: map[string][]agent.ResourceConfig{"agent-1": {{Name: "echo", Kind: "tcp", Addr: startEcho(t)}}},
		Agent: func(_ string, cfg *agent.Config) {
			cfg.Region = "us"
			cfg.ProbeInterval = 200 * time.Millisecond
			cfg.Logger = agentLogs.wrap(cfg.Logger)
		},
	}
	c := New(t, opts)
	a := c.Agents["agent-1"]
	homeAt := func(id, when string) time.Duration {
		t.Helper()
		start := time.Now()
		c.WaitFor(fmt.Sprintf("%s: the tunnel on %s", when, id), func() bool {
			return slices.Equal(a.TunnelProxies(), []string{id})
		})
		return time.Since(start)
	}
	homeAt("proxy-2", "its region's proxy learned")
	if err := session(c, "proxy-1"); err != nil {
		t.Fatalf("through eu, with the tunnel in us: %v", err)
	}
	// eu's proxy reached us's over a data link for the other region, on
	// us's far port (windows by BDP at both ends).
	if n := c.ProxyLogCount(peer.FarLinkMsg); n != 1 {
		t.Errorf("%d data links to another region logged, want 1 (eu's to us's)", n)
	}
	farPorts := c.ProxyLogValues("proxy started", "far_peer")
	if linked := c.ProxyLogValues(peer.FarLinkMsg, "addr"); len(linked) != 1 || !slices.Contains(farPorts, linked[0]) || linked[0] == "" {
		t.Errorf("the data link to another region went to %q, want a proxy's far port (one of %q)", linked, farPorts)
	}

	// us's proxy goes: the agent re-homes to eu.
	c.StopProxy("proxy-2")
	t.Logf("re-homed to eu %v after us's proxy stopped", homeAt("proxy-1", "us gone").Round(time.Millisecond))
	if err := session(c, "proxy-1"); err != nil {
		t.Fatalf("us gone: %v", err)
	}

	// A long session through eu's tunnel, then us comes back.
	long := startLongSession(t, c, "proxy-1")
	long.roundTrip("before")
	moves := agentLogs.get("tunnel moved to a nearer proxy")
	c.AddProxy(2)
	c.WaitMembers(2)
	c.WriteSSHConfig()
	t.Logf("home to us %v after its proxy started", homeAt("proxy-2", "us back").Round(time.Millisecond))
	if n := agentLogs.get("tunnel moved to a nearer proxy") - moves; n != 1 {
		t.Errorf("the tunnel moved %d times as us came back, want once", n)
	}
	long.roundTrip("after the tunnel moved home")
	for _, p := range []string{"proxy-1", "proxy-2"} {
		if err := session(c, p); err != nil {
			t.Errorf("a new session through %s after the move: %v", p, err)
		}
	}
	long.roundTrip("after new sessions")
	long.close()
	if n := c.ProxyLogCount(superseded); n != 0 {
		t.Errorf("proxies closed %d tunnels as %q; want none", n, superseded)
	}
}

// longSession is `ssh -W echo:7 PROXY` kept open.
type longSession struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	cancel context.CancelFunc
	n      int
}

func startLongSession(t *testing.T, c *Cluster, proxyID string) *longSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, "ssh", "-F", c.SSHConfig, "-W", "echo:7", proxyID)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &longSession{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), cancel: cancel}
	t.Cleanup(func() {
		s.close()
		if t.Failed() {
			t.Logf("the long session's stderr: %s", stderr.String())
		}
	})
	return s
}

// roundTrip sends a line and checks it comes back.
func (s *longSession) roundTrip(when string) {
	s.t.Helper()
	s.n++
	line := fmt.Sprintf("line %d\n", s.n)
	if _, err := io.WriteString(s.in, line); err != nil {
		s.t.Fatalf("%s: the long session is gone: %v", when, err)
	}
	got, err := s.out.ReadString('\n')
	if err != nil || got != line {
		s.t.Fatalf("%s: the long session answered %q, %v; want %q", when, got, err, line)
	}
}

func (s *longSession) close() {
	if s.cmd.Process != nil && s.cmd.ProcessState == nil {
		s.in.Close()
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.cancel()
			<-done
		}
	}
	s.cancel()
}
