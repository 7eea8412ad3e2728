package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/connect"
)

// TestConnectFailsOverToAnotherProxy: `warren config ssh --connect
// --region eu` writes a config with which stock ssh reaches node1 through
// the `warren` entry (warren connect picks proxy-1 or proxy-2, the eu
// proxies, and ssh checks the proxy/any principal) and warren-us reaches
// proxy-3; once the chosen proxy is killed, the very next ssh works
// through the other eu proxy.
func TestConnectFailsOverToAnotherProxy(t *testing.T) {
	m := newMultiIn(t, []string{"eu", "eu", "us"}, "")
	m.startAgent("agent-1", "node1", 2, "")
	waitFor(t, "node1 through proxy-1 and proxy-2", func() bool {
		return m.reachable(m.proxies[0], "node1") && m.reachable(m.proxies[1], "node1") && len(m.status(m.proxies[0])) == 3
	})
	cfg := filepath.Join(m.dir, "connect_ssh_config")
	if _, errs, code := runWarren(t, "config", "ssh", "--connect", "--region", "eu", "--write", cfg,
		"--proxy", m.proxies[0].User, "-i", filepath.Join(m.dir, "alice")); code != 0 {
		t.Fatalf("config ssh --connect: code %d stderr %q", code, errs)
	}
	text, _ := os.ReadFile(cfg)
	for _, want := range []string{"Host warren\n    ProxyCommand " + warrenBin + " connect", "Host warren-eu\n", "Host warren-us\n", "ProxyJump warren\n", "HostKeyAlias proxy/any\n"} {
		if !strings.Contains(string(text), want) {
			t.Fatalf("the written config lacks %q:\n%s", want, text)
		}
	}
	sshCfg := func(args ...string) (string, string, int) { return sshRun(t, cfg, args...) }
	if out, errs, code := sshCfg("node1", "echo", "via", "connect"); out != "via connect\n" {
		t.Fatalf("ssh node1 through warren connect: %q code %d stderr %q", out, code, errs)
	}
	if self := selfID(t, sshCfg, "warren-us"); self != "proxy-3" {
		t.Fatalf("warren-us reached %s, want proxy-3", self)
	}
	home := homeOf(t, m.dir, "eu")
	if home != "proxy-1" && home != "proxy-2" {
		t.Fatalf("the eu home is %q", home)
	}
	for range 3 {
		if self := selfID(t, sshCfg, "warren"); self != home {
			t.Fatalf("warren reached %s, the home is %s: not sticky", self, home)
		}
	}

	killed := m.proxies[0]
	if home == "proxy-2" {
		killed = m.proxies[1]
	}
	killed.Proc.Kill()
	start := time.Now()
	if out, errs, code := sshCfg("node1", "echo", "after", "kill"); out != "after kill\n" {
		t.Fatalf("ssh node1 right after %s was killed: %q code %d stderr %q", home, out, code, errs)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the ssh after the kill took %s", d)
	}
	if next := homeOf(t, m.dir, "eu"); next == home || next == "proxy-3" {
		t.Fatalf("after killing %s the eu home is %s, want the other eu proxy", home, next)
	}
}

// selfID asks the proxy that entry reaches who it is.
func selfID(t *testing.T, ssh func(...string) (string, string, int), entry string) string {
	t.Helper()
	out, errs, code := ssh(entry, "status", "--json")
	if code != 0 {
		t.Fatalf("ssh %s status: code %d stderr %q", entry, code, errs)
	}
	var st []map[string]any
	json.Unmarshal([]byte(out), &st)
	for _, s := range st {
		if s["link"] == "self" {
			return s["id"].(string)
		}
	}
	t.Fatalf("no self in %s's status: %s", entry, out)
	return ""
}

// homeOf reads warren connect's choice for region from its state file.
func homeOf(t *testing.T, dir, region string) string {
	t.Helper()
	st, err := connect.LoadState(filepath.Join(dir, "connect.state"))
	if err != nil {
		t.Fatal(err)
	}
	return st.Homes[region]
}
