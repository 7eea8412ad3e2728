package clustertest

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
)

// startDelayRelay forwards TCP to target, holding every chunk for delay in
// each direction: a slow network path, made in user space.
func startDelayRelay(t testing.TB, target string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	pump := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(delay)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, up)
			mu.Unlock()
			wg.Add(2)
			go pump(up, c)
			go pump(c, up)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

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
	slowCfg.Proxies = []string{startDelayRelay(t, c.Proxy.TunnelAddr(), 25*time.Millisecond)}
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
