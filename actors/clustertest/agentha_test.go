package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
)

// logCounter counts log records by message, and those with a "reason"
// by message and reason, whatever the level the test logger shows.
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func newLogCounter() *logCounter { return &logCounter{counts: map[string]int{}} }

func (c *logCounter) wrap(l *slog.Logger) *slog.Logger {
	return slog.New(countingHandler{next: l.Handler(), c: c})
}

func (c *logCounter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

type countingHandler struct {
	next slog.Handler
	c    *logCounter
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.c.mu.Lock()
	h.c.counts[r.Message]++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			h.c.counts[r.Message+": "+a.Value.String()]++
		}
		return true
	})
	h.c.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{next: h.next.WithAttrs(as), c: h.c}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{next: h.next.WithGroup(name), c: h.c}
}

const superseded = "tunnel closed: agent connected again"

// haOptions is a cluster of n proxy processes (more may come later) and
// one agent, "agent-1", serving echo with connection_count 2; the agent's
// logs are counted (the proxies' with Cluster.ProxyLogCount).
func haOptions(t *testing.T, n int, agentLogs *logCounter) Options {
	return Options{
		Proxies: n,
		Runner:  RunProcesses,
		Agents:  map[string][]agent.ResourceConfig{"agent-1": {{Name: "echo", Kind: "tcp", Addr: startEcho(t)}}},
		Agent: func(_ string, cfg *agent.Config) {
			cfg.ConnectionCount = 2
			cfg.Logger = agentLogs.wrap(cfg.Logger)
		},
	}
}

// distinctTunnels reports whether the agent holds want tunnels, each to a
// different proxy.
func distinctTunnels(a *agent.Agent, want int) bool {
	held := a.TunnelProxies()
	return a.Tunnels() == want && len(held) == want && len(slices.Compact(slices.Clone(held))) == want
}

// session runs one session to echo through proxy and reports whether the
// bytes came back.
func session(c *Cluster, proxyID string) error {
	r := c.Run(strings.NewReader("ping"), "ssh", "-W", "echo:7", proxyID)
	if r.Stdout != "ping" {
		return fmt.Errorf("ssh -W echo:7 %s: code %d stdout %q stderr %q", proxyID, r.Code, r.Stdout, strings.TrimSpace(r.Stderr))
	}
	return nil
}

// watchTunnels samples the agent's tunnels until stop is closed; the
// function it returns waits for that and reports the most tunnels the
// agent held at once and, if two ever went to one proxy, the proxies then.
func watchTunnels(a *agent.Agent, stop <-chan struct{}) func() (most int, dup []string) {
	var (
		most int
		dup  []string
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			held := a.TunnelProxies()
			most = max(most, a.Tunnels())
			if len(slices.Compact(slices.Clone(held))) != len(held) && dup == nil {
				dup = held
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() (int, []string) {
		<-done
		return most, dup
	}
}

// TestAgentHAOneProxy: connection_count 2 with one proxy alive (the
// example agent.yaml with the README's single proxy). The agent must hold
// exactly one tunnel, steadily: a second tunnel to the same proxy would
// supersede the first ("agent connected again") and both slots would
// knock each other off, failing sessions.
func TestAgentHAOneProxy(t *testing.T) {
	agentLogs := newLogCounter()
	c := New(t, haOptions(t, 1, agentLogs))
	a := c.Agents["agent-1"]
	c.WaitFor("one tunnel", func() bool { return distinctTunnels(a, 1) })

	stop := make(chan struct{})
	watched := watchTunnels(a, stop)
	end := time.Now().Add(10 * time.Second)
	failed := 0
	for i := 0; i < 20; i++ {
		if err := session(c, "proxy-1"); err != nil {
			failed++
			t.Errorf("session %d: %v", i, err)
		}
	}
	// The rest of the observation window: the tunnels must stay put.
	time.Sleep(time.Until(end))
	close(stop)
	most, dup := watched()

	if failed > 0 {
		t.Errorf("%d of 20 sessions failed", failed)
	}
	if most != 1 || dup != nil {
		t.Errorf("the agent held up to %d tunnels (duplicates: %v), want exactly 1", most, dup)
	}
	if n := c.ProxyLogCount(superseded); n != 0 {
		t.Errorf("the proxy closed %d tunnels as %q; want none", n, superseded)
	}
	if n := agentLogs.get("tunnel up"); n != 1 {
		t.Errorf("the agent brought up %d tunnels in the window, want 1 (it flaps)", n)
	}
	if !distinctTunnels(a, 1) {
		t.Errorf("after the window: %d tunnels to %v, want 1", a.Tunnels(), a.TunnelProxies())
	}
}

// sessions runs n sessions through proxyID and fails the test for each
// that does not work.
func sessions(t *testing.T, c *Cluster, proxyID string, n int, when string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := session(c, proxyID); err != nil {
			t.Errorf("%s: session %d: %v", when, i, err)
		}
	}
}

// background runs sessions through proxyID one after another until the
// returned function is called, which returns the failures.
func background(c *Cluster, proxyID string) (stop func() []error) {
	done := make(chan struct{})
	var failed []error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := session(c, proxyID); err != nil {
				failed = append(failed, err)
			}
		}
	}()
	return func() []error {
		close(done)
		wg.Wait()
		return failed
	}
}

// TestAgentHAProxiesComeAndGo: connection_count 2 starting with one
// proxy. A second proxy gets the second tunnel; stopping one of the two
// (the one the agent was not configured with, then the one it was) leaves
// one tunnel, and the idle slot dials nothing; a new proxy, or a
// restarted one, brings two again. Sessions through the proxy that stays
// work throughout, and no tunnel is ever superseded.
func TestAgentHAProxiesComeAndGo(t *testing.T) {
	agentLogs := newLogCounter()
	c := New(t, haOptions(t, 1, agentLogs))
	a := c.Agents["agent-1"]
	c.WaitFor("one tunnel", func() bool { return distinctTunnels(a, 1) })
	sessions(t, c, "proxy-1", 5, "one proxy")

	stop := make(chan struct{})
	watched := watchTunnels(a, stop)
	tunnelsTo := func(ids ...string) {
		t.Helper()
		c.WaitFor(fmt.Sprintf("tunnels to %v", ids), func() bool {
			return distinctTunnels(a, len(ids)) && slices.Equal(a.TunnelProxies(), ids)
		})
	}
	// idle checks that the agent brings up no tunnel while sessions run:
	// a slot without a proxy of its own waits.
	idle := func(proxyID, when string) {
		t.Helper()
		before := agentLogs.get("tunnel up")
		sessions(t, c, proxyID, 10, when)
		if n := agentLogs.get("tunnel up") - before; n != 0 {
			t.Errorf("%s: the agent brought up %d tunnels; want none", when, n)
		}
	}

	c.AddProxy(2)
	c.WaitMembers(2)
	c.WriteSSHConfig()
	tunnelsTo("proxy-1", "proxy-2")
	sessions(t, c, "proxy-1", 5, "two proxies")
	sessions(t, c, "proxy-2", 5, "two proxies")

	// proxy-2 goes: its slot finds no free proxy and waits.
	bg := background(c, "proxy-1")
	c.StopProxy("proxy-2")
	tunnelsTo("proxy-1")
	for _, err := range bg() {
		t.Errorf("while proxy-2 stopped: %v", err)
	}
	idle("proxy-1", "proxy-2 stopped")

	c.AddProxy(3)
	c.WaitMembers(2)
	c.WriteSSHConfig()
	tunnelsTo("proxy-1", "proxy-3")
	sessions(t, c, "proxy-3", 5, "proxy-3 started")

	// proxy-1, the agent's configured address, goes: the agent knows the
	// others by the proxy set.
	bg = background(c, "proxy-3")
	c.StopProxy("proxy-1")
	tunnelsTo("proxy-3")
	for _, err := range bg() {
		t.Errorf("while proxy-1 stopped: %v", err)
	}
	idle("proxy-3", "proxy-1 stopped")

	c.AddProxy(2) // restarted, on new ports
	c.WaitMembers(2)
	c.WriteSSHConfig()
	tunnelsTo("proxy-2", "proxy-3")
	sessions(t, c, "proxy-2", 5, "proxy-2 restarted")
	sessions(t, c, "proxy-3", 5, "proxy-2 restarted")

	close(stop)
	most, dup := watched()
	if most > 2 || dup != nil {
		t.Errorf("the agent held up to %d tunnels (duplicates: %v), want at most 2 to distinct proxies", most, dup)
	}
	if n := c.ProxyLogCount(superseded); n != 0 {
		t.Errorf("proxies closed %d tunnels as %q; want none", n, superseded)
	}
}

// lb is a TCP load balancer in front of proxies' tunnel ports: each
// connection goes to the next of the backends in turn.
type lb struct {
	ln       net.Listener
	backends func() []string
	next     atomic.Int64
	wg       sync.WaitGroup
}

func startLB(t *testing.T, backends func() []string) *lb {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &lb{ln: ln, backends: backends}
	var conns sync.Map
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			bs := l.backends()
			out, err := net.Dial("tcp", bs[int(l.next.Add(1))%len(bs)])
			if err != nil {
				in.Close()
				continue
			}
			conns.Store(in, out)
			l.wg.Add(2)
			go func() { defer l.wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer l.wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, v any) bool { k.(net.Conn).Close(); v.(net.Conn).Close(); return true })
		l.wg.Wait()
	})
	return l
}

// TestAgentHABehindLoadBalancer: the agent knows one address, a load
// balancer in front of two proxies. Slots that land on a proxy another
// slot holds try again; the agent ends with one tunnel to each proxy,
// none superseded.
func TestAgentHABehindLoadBalancer(t *testing.T) {
	agentLogs := newLogCounter()
	opts := haOptions(t, 2, agentLogs)
	agents := opts.Agents
	opts.Agents = nil
	c := New(t, opts)
	// Every connection through the balancer lands on proxy-1, so that
	// both slots meet there: the agent must find proxy-2 by the address
	// the proxy set gives.
	balancer := startLB(t, func() []string { return []string{c.Proxies[0].TunnelAddr()} })
	cfg := c.AgentConfig("agent-1", agents["agent-1"])
	cfg.Proxies = []string{balancer.ln.Addr().String()}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	c.Agents["agent-1"] = a
	c.hosts = append(c.hosts, "echo")
	c.WriteSSHConfig()
	c.WaitFor("two tunnels to proxy-1 and proxy-2", func() bool {
		return distinctTunnels(a, 2) && slices.Equal(a.TunnelProxies(), []string{"proxy-1", "proxy-2"})
	})
	sessions(t, c, "proxy-1", 5, "behind a load balancer")
	sessions(t, c, "proxy-2", 5, "behind a load balancer")
	if n := c.ProxyLogCount(superseded); n != 0 {
		t.Errorf("proxies closed %d tunnels as %q; want none", n, superseded)
	}
	if n := agentLogs.get("tunnel up"); n != 2 {
		t.Errorf("the agent brought up %d tunnels, want 2", n)
	}
}

// TestAgentMeshProxiesComeAndGo: agent_mesh keeps one tunnel to every
// proxy as proxies come and go, the first of them (the bootstrap's, to
// its configured address) included, and never two to one proxy.
func TestAgentMeshProxiesComeAndGo(t *testing.T) {
	agentLogs := newLogCounter()
	opts := haOptions(t, 2, agentLogs)
	opts.Agent = func(_ string, cfg *agent.Config) {
		cfg.TunnelStrategy = agent.StrategyMesh
		cfg.Logger = agentLogs.wrap(cfg.Logger)
	}
	c := New(t, opts)
	a := c.Agents["agent-1"]
	stop := make(chan struct{})
	watched := watchTunnels(a, stop)
	tunnelsTo := func(ids ...string) {
		t.Helper()
		c.WaitFor(fmt.Sprintf("tunnels to %v", ids), func() bool {
			return distinctTunnels(a, len(ids)) && slices.Equal(a.TunnelProxies(), ids)
		})
	}
	tunnelsTo("proxy-1", "proxy-2")
	c.AddProxy(3)
	c.WaitMembers(3)
	c.WriteSSHConfig()
	tunnelsTo("proxy-1", "proxy-2", "proxy-3")
	for _, p := range c.Proxies {
		sessions(t, c, p.ID(), 3, "three proxies")
	}

	c.StopProxy("proxy-1")
	tunnelsTo("proxy-2", "proxy-3")
	c.AddProxy(1) // restarted, on new ports
	c.WaitMembers(3)
	c.WriteSSHConfig()
	tunnelsTo("proxy-1", "proxy-2", "proxy-3")
	for _, p := range c.Proxies {
		sessions(t, c, p.ID(), 3, "proxy-1 restarted")
	}

	close(stop)
	if most, dup := watched(); most > 3 || dup != nil {
		t.Errorf("the agent held up to %d tunnels (duplicates: %v), want at most 3 to distinct proxies", most, dup)
	}
	if n := c.ProxyLogCount(superseded); n != 0 {
		t.Errorf("proxies closed %d tunnels as %q; want none", n, superseded)
	}
}

// TestProxyShutdownHandsTunnelsOff: a proxy stopped with SIGTERM first
// tells its agents it is leaving; the agent opens its tunnel on the spare
// proxy before it withdraws its routes from the leaving one (make before
// break), so that the proxy sees no route left before it shuts down, and
// the agent never has fewer than its two tunnels. Sessions through
// another proxy never fail meanwhile.
func TestProxyShutdownHandsTunnelsOff(t *testing.T) {
	agentLogs := newLogCounter()
	c := New(t, haOptions(t, 3, agentLogs))
	a := c.Agents["agent-1"]
	c.WaitFor("two tunnels", func() bool { return distinctTunnels(a, 2) })
	held := a.TunnelProxies()
	leaving, staying := held[0], held[1]
	var spare string
	for _, p := range c.Proxies {
		if !slices.Contains(held, p.ID()) {
			spare = p.ID()
		}
	}
	c.WaitFor("every proxy routes echo", func() bool {
		for _, p := range c.Proxies {
			if !p.Routable("echo") {
				return false
			}
		}
		return true
	})
	stopWatch := make(chan struct{})
	watched := watchTunnels(a, stopWatch)
	fewest := make(chan int, 1)
	go func() {
		least := 2
		for {
			select {
			case <-stopWatch:
				fewest <- least
				return
			case <-time.After(5 * time.Millisecond):
			}
			least = min(least, len(a.TunnelProxies()))
		}
	}()
	stop := background(c, staying)

	c.StopProxy(leaving)
	if n := c.ProxyLogCount(proxy.HandedOffMsg); n != 1 {
		t.Errorf("%d proxies logged %q, want the one stopped", n, proxy.HandedOffMsg)
	}
	if n := agentLogs.get("tunnel moved off a proxy that is shutting down"); n != 1 {
		t.Errorf("the agent moved %d tunnels off the leaving proxy, want 1", n)
	}
	if got := a.TunnelProxies(); !slices.Equal(got, []string{spare, staying}) && !slices.Equal(got, []string{staying, spare}) {
		t.Errorf("tunnels to %v once %s stopped, want %s and %s", got, leaving, staying, spare)
	}
	for _, err := range stop() {
		t.Errorf("a session through %s while %s shut down: %v", staying, leaving, err)
	}
	sessions(t, c, spare, 3, "through the proxy that took the tunnel")
	close(stopWatch)
	if least := <-fewest; least < 2 {
		t.Errorf("the agent had %d tunnels up at one point, want never fewer than 2", least)
	}
	if _, dup := watched(); dup != nil {
		t.Errorf("two tunnels to one proxy at once: %v", dup)
	}
}
