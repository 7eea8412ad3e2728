package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJSONLogsHoldNoSecrets: a proxy and an agent logging JSON at debug
// level (their config's log section) through a join, sessions, a refused
// login, wrong API tokens and a reload write only JSON lines, one
// "session ended" line per session with its outcome and timings, and none
// of the cluster's secrets: the join token, the API token, the gossip
// key, a token an attacker sent, or a private key.
func TestJSONLogsHoldNoSecrets(t *testing.T) {
	const gossipKey = "c2VjcmV0LWdvc3NpcC1rZXktMzItYnl0ZXMtbG9uZyE="
	m := newMultiWith(t, []string{"local"}, gossipKey, "log: {format: json, level: debug}\n")
	p := m.proxies[0]
	echo := startEchoServer(t)
	ag := m.startAgentYAML("agent-1", 0, "log: {format: json, level: debug}\nresources:\n  - name: echo\n    kind: tcp\n    addr: "+echo+"\n")
	waitFor(t, "echo routed", func() bool {
		out, _, _ := m.ssh(p.ID, "ls")
		return strings.Contains(out, "1/1")
	})
	c := m.sshClient(t, p)
	for range 3 {
		conn, err := c.Dial("tcp", "echo:7")
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("hello"))
		conn.Read(make([]byte, 5))
		conn.Close()
	}
	c.Close()
	attackerToken := "attacker-guess-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	for _, tok := range []string{attackerToken, m.h.APIToken + "x"} {
		req, _ := http.NewRequest("GET", "http://"+p.HTTP+"/api/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}
	// A reload with a changed level and a setting that needs a restart.
	cfgText, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(cfgText), "log: {format: json, level: debug}", "log: {format: json, level: info}\nsession: {dial_timeout: 14s}", 1)
	if err := os.WriteFile(p.Config, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		b, err := os.ReadFile(p.Logs[len(p.Logs)-1])
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	waitFor(t, "the reload in the proxy's log", func() bool { return strings.Contains(logs(), "apply only after a restart") })
	// And a reload of a file that is no longer valid: said, and nothing
	// changes (the proxy serves on).
	if err := os.WriteFile(p.Config, []byte(changed+"bogus_setting: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Proc.Signal(syscall.SIGHUP)
	waitFor(t, "the refused reload in the proxy's log", func() bool { return strings.Contains(logs(), "nothing changed") })
	if out, _, code := m.ssh(p.ID, "ls"); code != 0 || !strings.Contains(out, "echo") {
		t.Fatalf("the proxy stopped serving after a bad reload: %d %q", code, out)
	}
	ag.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-ag.done:
		ag.done <- err // for start's cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop")
	}

	secrets := map[string]string{
		"the join token":        m.token,
		"the API token":         m.h.APIToken,
		"the gossip key":        gossipKey,
		"the attacker's token":  attackerToken,
		"a private key":         "PRIVATE KEY",
		"an ssh private key":    "OPENSSH PRIVATE",
		"the API token, in hex": strings.TrimSpace(m.h.APIToken)[:16],
	}
	for name, log := range map[string]string{"proxy": logs(), "agent": ag.stderr.String()} {
		var ends []map[string]any
		reloaded := false
		for line := range strings.Lines(log) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("%s log: a line that is not JSON: %q", name, line)
				continue
			}
			if rec["msg"] == "session ended" {
				ends = append(ends, rec)
			}
			if rec["msg"] == "reload: log level changed" && rec["to"] == "INFO" {
				reloaded = true
			}
		}
		for what, s := range secrets {
			if s != "" && strings.Contains(log, s) {
				t.Errorf("the %s log holds %s", name, what)
			}
		}
		if name != "proxy" {
			continue
		}
		if !reloaded {
			t.Errorf("the proxy's log does not say the reload changed the level to info")
		}
		if len(ends) != 3 {
			t.Errorf("the proxy logged %d session ends for 3 sessions", len(ends))
		}
		for _, e := range ends {
			for _, k := range []string{"session", "user", "resource", "agent", "path", "outcome", "duration", "connect", "user_rtt", "peer_rtt", "agent_rtt", "bytes_up", "bytes_down"} {
				if _, ok := e[k]; !ok {
					t.Errorf("a session end lacks %q: %v", k, e)
				}
			}
			if e["outcome"] != "ok" || e["bytes_up"] != float64(5) {
				t.Errorf("a session end: %v", e)
			}
		}
	}
}
