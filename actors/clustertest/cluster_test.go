package clustertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
)

// tunnelHolder returns the proxy that holds the agent serving resource.
func tunnelHolder(t *testing.T, c *Cluster, resource string) *proxy.Proxy {
	t.Helper()
	for _, p := range c.Proxies {
		for _, e := range p.Table().Snapshot().Lookup(resource) {
			if e.Local && e.Usable() {
				return p
			}
		}
	}
	t.Fatalf("no proxy holds a tunnel for %s", resource)
	return nil
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

	// A large file across a peer hop: enter through a proxy that does not
	// hold node1's tunnel.
	holder := tunnelHolder(t, c, "node1")
	var entry *proxy.Proxy
	for _, p := range c.Proxies {
		if p != holder {
			entry = p
			break
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	sum := randomFile(t, src, 256<<20)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dst := filepath.Join(dir, "copy")
	if r := c.Run(f, "ssh", "-J", entry.ID(), "node1", "cat > "+dst); r.Code != 0 {
		t.Fatalf("256 MiB through %s to node1 on %s: code %d stderr %q", entry.ID(), holder.ID(), r.Code, r.Stderr)
	}
	if got := fileSum(t, dst); got != sum {
		t.Fatalf("256 MiB across a peer hop: sha256 %s, want %s", got, sum)
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
		c.WaitFor(p.ID()+" holds a local tunnel", func() bool {
			for _, e := range p.Table().Snapshot().Lookup("node1") {
				if e.Local && e.Usable() {
					return true
				}
			}
			return false
		})
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
