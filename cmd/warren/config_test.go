package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-proxy/warren/internal/echo"
)

// TestConfigSSHWrite: `warren config ssh --write` keeps one Warren block in
// an ssh config however often it runs, lists ssh resources as hosts (stock
// ssh reaches them) and tcp resources only as ssh -L/-W hints, and picks up
// resources added since.
func TestConfigSSHWrite(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go echo.Serve(ln, nil)
	defer ln.Close()
	c.agent("agent-1", c.token, fmt.Sprintf("  - {name: node1, kind: ssh}\n  - {name: db, kind: tcp, addr: %s}\n", ln.Addr()))
	waitFor(t, "two resources online", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Count(out, "online") == 2
	})
	cfg := filepath.Join(c.dir, "user_ssh_config")
	os.WriteFile(cfg, []byte("Host elsewhere\n    User me\n"), 0o600)
	c.adminOK("config", "ssh", "--write", cfg)
	c.adminOK("config", "ssh", "--write", cfg)
	text, _ := os.ReadFile(cfg)
	if n := strings.Count(string(text), "# BEGIN warren warren-proxy"); n != 1 {
		t.Fatalf("%d Warren blocks after two runs, want 1:\n%s", n, text)
	}
	if !strings.Contains(string(text), "Host node1\n") || !strings.Contains(string(text), "# tcp resource db: ssh -N -L") || !strings.HasPrefix(string(text), "Host elsewhere") {
		t.Fatalf("ssh config:\n%s", text)
	}
	if out := c.sshOK(cfg, "node1", "echo", "via", "config"); out != "via config\n" {
		t.Fatalf("ssh node1 with the written config: %q", out)
	}
	if out, errs, code := runCmdInput(t, "ping\n", "ssh", "-F", cfg, "-o", "BatchMode=yes", "-W", "db:9", "warren-proxy"); out != "ping\n" {
		t.Fatalf("ssh -W db through the written config: %q code %d stderr %q", out, code, errs)
	}
	c.agent("agent-2", c.token, "  - {name: node2, kind: ssh}\n")
	waitFor(t, "node2 online", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Contains(out, "node2")
	})
	c.adminOK("config", "ssh", "--write", cfg)
	if out := c.sshOK(cfg, "node2", "echo", "new"); out != "new\n" {
		t.Fatalf("a resource added later, after running again: %q", out)
	}
}
