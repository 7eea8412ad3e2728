package clustertest

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/actors/agent"
)

// tunnelHolder returns the proxy that holds agent's one tunnel.
func tunnelHolder(t *testing.T, c *Cluster, agent string) *Proxy {
	t.Helper()
	held := c.Agents[agent].TunnelProxies()
	for _, p := range c.Proxies {
		if len(held) == 1 && held[0] == p.ID() {
			return p
		}
	}
	t.Fatalf("%s holds tunnels to %v, want one to a proxy of the cluster", agent, held)
	return nil
}

// localAgents is how many agents hold a tunnel to p, as p reports it.
func localAgents(c *Cluster, p *Proxy) int {
	st, err := c.H.Status(p.H)
	if err != nil {
		return -1
	}
	for _, m := range st {
		if m.ID == p.ID() {
			return m.LocalAgents
		}
	}
	return -1
}

func TestPeeringEveryProxyReachesEveryAgent(t *testing.T) {
	echo := startEcho(t)
	c := New(t, Options{Proxies: 3, Agents: map[string][]agent.ResourceConfig{
		"agent-1": {{Name: "node1", Kind: "ssh"}},
		"agent-2": {{Name: "echo", Kind: "tcp", Addr: echo}},
	}})
	for _, a := range c.Agents {
		if n := a.Tunnels(); n != 1 {
			t.Errorf("agent %s: got %d tunnels, want 1 (proxy_peering, connection_count 1)", a.ID(), n)
		}
	}
	for _, p := range c.Proxies {
		r := c.Run(nil, "ssh", "-J", p.ID(), "node1", "echo via "+p.ID())
		if r.Code != 0 || r.Stdout != "via "+p.ID()+"\n" {
			t.Fatalf("ssh -J %s node1: got code %d stdout %q stderr %q", p.ID(), r.Code, r.Stdout, r.Stderr)
		}
		r = c.Run(strings.NewReader("ping"), "ssh", "-W", "echo:7", p.ID())
		if r.Stdout != "ping" {
			t.Fatalf("ssh -W echo:7 %s: got %q stderr %q", p.ID(), r.Stdout, r.Stderr)
		}
	}

	// A file across a peer hop: enter through a proxy that does not
	// hold node1's tunnel.
	holder := tunnelHolder(t, c, "agent-1")
	var entry *Proxy
	for _, p := range c.Proxies {
		if p != holder {
			entry = p
			break
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	// 32 MiB, hundreds of SSH windows; cmd/warren's TestThreeProxiesPeering sends
	// 256 MiB across a peer hop through warren processes.
	sum := randomFile(t, src, 32<<20)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dst := filepath.Join(dir, "copy")
	if r := c.Run(f, "ssh", "-J", entry.ID(), "node1", "cat > "+dst); r.Code != 0 {
		t.Fatalf("32 MiB through %s to node1 on %s: code %d stderr %q", entry.ID(), holder.ID(), r.Code, r.Stderr)
	}
	if got := fileSum(t, dst); got != sum {
		t.Fatalf("32 MiB across a peer hop: sha256 %s, want %s", got, sum)
	}
	r := c.Run(nil, "ssh", "-J", entry.ID(), "node1", "sha256sum "+dst)
	if !strings.HasPrefix(r.Stdout, sum) {
		t.Fatalf("read back across the hop: got %q", r.Stdout)
	}
}

func TestMeshOneTunnelPerProxy(t *testing.T) {
	c := New(t, Options{
		Proxies: 3,
		Agents:  map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}}},
		Agent:   func(_ string, cfg *agent.Config) { cfg.TunnelStrategy = agent.StrategyMesh },
	})
	a := c.Agents["agent-1"]
	c.WaitFor("3 mesh tunnels", func() bool { return a.Tunnels() == 3 })
	for _, p := range c.Proxies {
		c.WaitFor(p.ID()+" holds a local tunnel", func() bool { return localAgents(c, p) == 1 })
	}
}

func TestClusterStatus(t *testing.T) {
	c := New(t, Options{Proxies: 3, Agents: map[string][]agent.ResourceConfig{"agent-1": {{Name: "node1", Kind: "ssh"}}}})
	r := c.Run(nil, "ssh", "proxy-2", "status")
	if r.Code != 0 {
		t.Fatalf("status: code %d stderr %q", r.Code, r.Stderr)
	}
	for _, want := range []string{"proxy-1", "proxy-2", "proxy-3", "self", "ok ("} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, r.Stdout)
		}
	}
	t.Logf("status:\n%s", r.Stdout)
	r = c.Run(nil, "ssh", "proxy-2", "status")
	t.Logf("status again:\n%s", r.Stdout)
}

// ProxyLogCount reads the records a proxy process writes (runChild's
// handler), by message and by message and reason.
func TestProxyLogCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy-1.1.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(f, nil)).With("proxy", "proxy-1")
	log.Info("tunnel closed", "agent", "a-1", "reason", "agent connected again")
	log.Info("tunnel closed", "agent", "a-2", "reason", "tunnel closed")
	f.WriteString("not json\n")
	f.Close()
	c := &Cluster{t: t, proxyLogs: []string{path}}
	for key, want := range map[string]int{superseded: 1, "tunnel closed": 2, "tunnel up": 0} {
		if got := c.ProxyLogCount(key); got != want {
			t.Errorf("ProxyLogCount(%q) = %d, want %d", key, got, want)
		}
	}
}
