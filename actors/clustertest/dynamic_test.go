package clustertest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/internal/model"
)

func definitionsOn(c *Cluster, p *Proxy) []model.Definition {
	r := c.Run(nil, "ssh", p.ID(), "resource", "ls", "--json")
	var defs []model.Definition
	json.Unmarshal([]byte(r.Stdout), &defs)
	return defs
}

func TestDynamicResources(t *testing.T) {
	who1, who2 := startWho(t, "one"), startWho(t, "two")
	c := New(t, Options{
		Proxies: 3,
		Agents: map[string][]agent.ResourceConfig{
			"agent-1": nil, // served only what the cluster defines
			"agent-2": nil,
		},
		Agent: func(name string, cfg *agent.Config) {
			cfg.Labels = map[string]string{"role": name}
			cfg.Watch = []agent.Watcher{{Labels: map[string]string{"env": "prod"}}}
		},
	})

	create := func(p *Proxy, yaml string) Result {
		return c.Run(strings.NewReader(yaml), "ssh", p.ID(), "resource", "create")
	}
	start := time.Now()
	if r := create(c.Proxies[2], fmt.Sprintf("name: web\nkind: tcp\naddr: %s\nlabels: {env: prod}\nselector: role=agent-1\n", who1)); r.Code != 0 {
		t.Fatalf("create through proxy-3: code %d stderr %q", r.Code, r.Stderr)
	}
	c.hosts = append(c.hosts, "web")
	c.WaitRoutable("web")
	t.Logf("dynamic resource created through proxy-3 was routable on every proxy after %s", time.Since(start).Round(time.Millisecond))
	for _, p := range c.Proxies {
		if r := c.Run(nil, "ssh", "-W", "web:80", p.ID()); strings.TrimSpace(r.Stdout) != "one" {
			t.Fatalf("web through %s: got %q (stderr %q), want the agent-1 upstream", p.ID(), r.Stdout, r.Stderr)
		}
	}
	// The selector kept agent-2 out, though it watches env=prod.
	rs, err := c.H.Resources(c.Proxies[0].H)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Name == "web" && r.Agents != 1 {
			t.Fatalf("%d agents serve web, want agent-1 alone (selector role=agent-1 keeps agent-2 out)", r.Agents)
		}
	}

	t.Run("bad definitions change nothing", func(t *testing.T) {
		for _, bad := range []struct{ yaml, want string }{
			{"name: 'bad name'\nkind: tcp\naddr: 1.2.3.4:5\n", "name:"},
			{"name: x\nkind: udp\naddr: 1.2.3.4:5\n", "unknown kind"},
			{"name: x\nkind: tcp\naddr: 1.2.3.4:5\nselector: 'env'\n", "malformed selector"},
			{"name: x\nkind: tcp\nport: 5\n", "not a known setting"},
		} {
			r := create(c.Proxies[0], bad.yaml)
			if r.Code == 0 || !strings.Contains(r.Stderr, bad.want) {
				t.Errorf("definition %q: got code %d stderr %q, want a refusal mentioning %q", bad.yaml, r.Code, r.Stderr, bad.want)
			}
		}
		if n := len(definitionsOn(c, c.Proxies[0])); n != 1 {
			t.Fatalf("after refused definitions: %d definitions stored, want 1", n)
		}
	})

	t.Run("concurrent writers converge", func(t *testing.T) {
		done := make(chan Result, 3)
		for i, p := range c.Proxies {
			go func() {
				done <- create(p, fmt.Sprintf("name: race\nkind: tcp\naddr: 127.0.0.1:%d\nlabels: {env: test}\n", 1000+i))
			}()
		}
		for range c.Proxies {
			if r := <-done; r.Code != 0 {
				t.Fatalf("concurrent create: code %d stderr %q", r.Code, r.Stderr)
			}
		}
		c.WaitFor("one value of race on every proxy", func() bool {
			var first string
			for i, p := range c.Proxies {
				var addr string
				for _, d := range definitionsOn(c, p) {
					if d.Name == "race" {
						addr = d.Addr
					}
				}
				if addr == "" || (i > 0 && addr != first) {
					return false
				}
				first = addr
			}
			return true
		})
	})

	t.Run("a restarted proxy catches up", func(t *testing.T) {
		c.StopProxy("proxy-3")
		if r := create(c.Proxies[0], fmt.Sprintf("name: late\nkind: tcp\naddr: %s\nlabels: {env: prod}\nselector: role=agent-2\n", who2)); r.Code != 0 {
			t.Fatalf("create while proxy-3 is down: %q", r.Stderr)
		}
		c.AddProxy(3) // on its data, with new ports
		c.WaitMembers(3)
		c.WriteSSHConfig()
		c.WaitFor("proxy-3 knows late", func() bool {
			for _, d := range definitionsOn(c, c.Proxies[2]) {
				if d.Name == "late" {
					return true
				}
			}
			return false
		})
		c.hosts = append(c.hosts, "late")
		c.WaitRoutable("late")
		if r := c.Run(nil, "ssh", "-W", "late:80", "proxy-3"); strings.TrimSpace(r.Stdout) != "two" {
			t.Fatalf("late through the restarted proxy: got %q (stderr %q)", r.Stdout, r.Stderr)
		}
	})

	t.Run("rm removes it everywhere", func(t *testing.T) {
		if r := c.Run(nil, "ssh", "proxy-2", "resource", "rm", "web"); r.Code != 0 {
			t.Fatalf("rm: code %d stderr %q", r.Code, r.Stderr)
		}
		start := time.Now()
		c.WaitFor("web gone from every proxy", func() bool {
			for _, p := range c.Proxies {
				if p.Routable("web") {
					return false
				}
			}
			return true
		})
		t.Logf("deleted resource unroutable on every proxy after %s", time.Since(start).Round(time.Millisecond))
		for _, p := range c.Proxies {
			for _, d := range definitionsOn(c, p) {
				if d.Name == "web" {
					t.Fatalf("%s still lists web", p.ID())
				}
			}
		}
		if r := c.Run(nil, "ssh", "proxy-1", "resource", "rm", "web"); r.Code == 0 || !strings.Contains(r.Stderr, "no dynamic resource") {
			t.Fatalf("second rm: got code %d stderr %q", r.Code, r.Stderr)
		}
	})
}
