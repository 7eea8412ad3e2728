package clustertest

import (
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/internal/slowlink"
)

// TestNearestPrefersTheLowerRTTPath: two agents serve one name; one
// agent's tunnel crosses a path with 25 ms of delay each way. With the
// nearest strategy every new session goes to the other one.
func TestNearestPrefersTheLowerRTTPath(t *testing.T) {
	whoFast, whoSlow := startWho(t, "fast"), startWho(t, "slow")
	c := New(t, Options{
		Proxy: func(cfg *proxy.Config) {
			cfg.Session.Strategy = "nearest"
			cfg.Tunnel.KeepaliveInterval = 200 * time.Millisecond
		},
		Agents: map[string][]agent.ResourceConfig{"agent-fast": {{Name: "pool", Kind: "tcp", Addr: whoFast}}},
	})
	slowCfg := c.AgentConfig("agent-slow", []agent.ResourceConfig{{Name: "pool", Kind: "tcp", Addr: whoSlow}})
	slowCfg.Proxies = []string{slowlink.Start(t, c.Proxy.TunnelAddr(), 25*time.Millisecond)}
	a, err := agent.New(slowCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	c.WaitFor("both paths measured", func() bool {
		eps := c.Proxy.Table().Snapshot().Lookup("pool")
		measured := 0
		for _, e := range eps {
			if e.Usable() && e.RTT > 0 {
				measured++
			}
		}
		return measured == 2
	})
	for _, e := range c.Proxy.Table().Snapshot().Lookup("pool") {
		t.Logf("agent %s: tunnel RTT %s", e.AgentID, e.RTT.Round(100*time.Microsecond))
	}
	for i := 0; i < 20; i++ {
		r := c.Run(nil, "ssh", "-W", "pool:7", "proxy-1")
		if got := strings.TrimSpace(r.Stdout); got != "fast" {
			t.Fatalf("session %d reached %q (stderr %q), want the agent on the fast path", i, got, r.Stderr)
		}
	}
}
