package clustertest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
)

// startWho serves its name to every connection, so a test can tell which
// replica a session reached.
func startWho(t testing.TB, name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, name+"\n")
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestPoolListedOnceAndStickyPerConnection(t *testing.T) {
	c := New(t, Options{
		Agents: map[string][]agent.ResourceConfig{
			"agent-a": {{Name: "pool", Kind: "tcp", Addr: startWho(t, "a")}},
			"agent-b": {{Name: "pool", Kind: "tcp", Addr: startWho(t, "b")}},
			"agent-c": {{Name: "pool-c", Kind: "tcp", Addr: startWho(t, "c")}},
		},
		Proxy: func(cfg *proxy.Config) { cfg.Session.Strategy = "random" },
	})
	c.WaitFor("both replicas healthy", func() bool {
		for _, s := range c.Proxy.Table().Snapshot().List() {
			if s.Name == "pool" {
				return s.Healthy == 2
			}
		}
		return false
	})
	r := c.Run(nil, "ssh", "proxy-1", "ls")
	if strings.Count(r.Stdout, "pool ") != 1 || !strings.Contains(r.Stdout, "2/2") || !strings.Contains(r.Stdout, "pool-c") {
		t.Fatalf("ls: want pool once with 2/2 agents and pool-c apart, got:\n%s", r.Stdout)
	}

	// One user connection, many channels: all reach the same replica.
	port := freePort(t)
	cmd := exec.Command("ssh", "-F", c.SSHConfig, "-N", "-o", "ExitOnForwardFailure=yes", "-L", fmt.Sprintf("127.0.0.1:%d:pool:7", port), "proxy-1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	who := func() string {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err != nil {
			return ""
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(conn)
		return strings.TrimSpace(string(b))
	}
	var first string
	c.WaitFor("the forward works", func() bool { first = who(); return first != "" })
	for i := 0; i < 20; i++ {
		if got := who(); got != first {
			t.Fatalf("channel %d of one connection reached replica %q, the first reached %q: not sticky (ssh: %s)", i, got, first, stderr.String())
		}
	}
	// Separate connections spread (random strategy): both replicas serve.
	seen := map[string]bool{}
	for i := 0; i < 30 && len(seen) < 2; i++ {
		r := c.Run(nil, "ssh", "-W", "pool:7", "proxy-1")
		seen[strings.TrimSpace(r.Stdout)] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("30 separate connections reached %v; want both replicas", seen)
	}
}
