package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warren-proxy/warren/internal/harness"
)

// scrape is one read of a /metrics page: its text, and its families.
type scrape struct {
	text string
	fams map[string]*dto.MetricFamily
}

// getMetrics GETs url with the bearer token (none if empty) and returns
// the status and the page.
func getMetrics(t *testing.T, url, token string) (int, scrape) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	s := scrape{text: string(b)}
	if res.StatusCode == http.StatusOK {
		p := expfmt.NewTextParser(model.UTF8Validation)
		if s.fams, err = p.TextToMetricFamilies(bytes.NewReader(b)); err != nil {
			t.Fatalf("%s: not Prometheus' text format: %v", url, err)
		}
	}
	return res.StatusCode, s
}

// value is the sample of family name whose labels hold all of labels
// (pairs), summed over the samples that match: a counter's or gauge's
// value, a histogram's count. Missing is 0.
func (s scrape) value(name string, labels ...string) float64 {
	f := s.fams[name]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.Label {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// promtoolCheck runs `promtool check metrics` on a page: Prometheus'
// own linter of names, units, types and help.
func promtoolCheck(t *testing.T, what, page string) {
	t.Helper()
	needClients(t, "prometheus", "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(page)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on %s: %v\n%s", what, err, out)
	}
}

// TestMetrics: a proxy's /metrics (behind the API token) and an agent's
// (on debug_listen, behind its token) pass `promtool check metrics`, and
// their numbers move as sessions start, fail over and end.
func TestMetrics(t *testing.T) {
	// newMulti's tunnel keepalives (every 1 s) measure the agent leg soon;
	// a frozen agent's tunnel is dropped after 3 of them, after the
	// session's 1 s attempt has failed over.
	m := newMultiWith(t, []string{"local", "local"}, "", "session: {attempt_timeout: 1s}\n")
	m.waitMembers(2, m.proxies)
	echo := startEchoServer(t)
	// One tunnel each, to their first proxy: agent-1 is local to proxy-1
	// (m.proxies[0]), agent-2 to proxy-2.
	a1 := m.startAgentYAML("agent-1", 0, fmt.Sprintf("connection_count: 1\nresources:\n  - name: echo\n    kind: tcp\n    addr: %s\n", echo))
	debugAddr, err := harness.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	debugToken := "agent-debug-token-0123456789"
	tokFile := filepath.Join(m.dir, "agent-2.debug_token")
	if err := os.WriteFile(tokFile, []byte(debugToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.startAgentYAML("agent-2", 1, fmt.Sprintf("connection_count: 1\ndebug_listen: %s\ndebug_token_file: %s\nresources:\n  - name: echo\n    kind: tcp\n    addr: %s\n", debugAddr, tokFile, echo))
	waitFor(t, "both agents of echo healthy", func() bool {
		out, _, _ := m.ssh(m.proxies[0].ID, "ls")
		return strings.Contains(out, "2/2")
	})

	p0 := m.proxies[0]
	url := "http://" + p0.HTTP + "/metrics"
	token := m.h.APIToken
	for _, tok := range []string{"", "wrong-token"} {
		if code, s := getMetrics(t, url, tok); code != http.StatusUnauthorized || !strings.Contains(s.text, "api_token") {
			t.Errorf("/metrics with token %q: %d %q; want 401 naming the api_token", tok, code, s.text)
		}
	}
	var before scrape
	waitFor(t, "proxy-1's probe of proxy-2", func() bool {
		code, s := getMetrics(t, url, token)
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d %s", code, s.text)
		}
		before = s
		return s.value("warren_peer_up", "peer", m.proxies[1].ID) == 1
	})
	promtoolCheck(t, "the proxy's /metrics", before.text)
	for _, name := range []string{"warren_build_info", "warren_sessions", "warren_agent_tunnels", "warren_routes", "warren_resources",
		"warren_gossip_members", "warren_peer_up", "warren_ready", "go_goroutines", "process_resident_memory_bytes"} {
		if before.fams[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if v := before.value("warren_gossip_members", "state", "alive"); v != 2 {
		t.Errorf("warren_gossip_members{state=alive} = %v; want 2", v)
	}
	if v := before.value("warren_resources", "status", "online"); v != 1 {
		t.Errorf("warren_resources{status=online} = %v; want 1 (echo)", v)
	}
	if v := before.value("warren_agent_tunnels"); v != 1 {
		t.Errorf("warren_agent_tunnels = %v; want 1 (agent-1)", v)
	}

	// A session through the local agent: it starts, carries bytes both
	// ways, and ends.
	c := m.sshClient(t, p0)
	defer c.Close()
	roundTrip := func(conn net.Conn, n int) {
		t.Helper()
		msg := bytes.Repeat([]byte("x"), n)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := c.Dial("tcp", "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(conn, 10000)
	_, during := getMetrics(t, url, token)
	checkMoved(t, "a session running", before, during, []moved{
		{"warren_sessions", nil, 1},
		{"warren_sessions_started_total", []string{"result", "ok"}, 1},
		{"warren_access_decisions_total", []string{"stage", "session", "result", "allowed"}, 1},
		{"warren_dial_attempts_total", []string{"path", "local", "result", "ok"}, 1},
		{"warren_session_connect_duration_seconds", []string{"path", "local"}, 1},
		{"warren_session_leg_rtt_seconds", []string{"leg", "agent"}, 1},
	})
	for _, dir := range []string{"up", "down"} {
		if d := during.value("warren_session_bytes_total", "direction", dir) - before.value("warren_session_bytes_total", "direction", dir); d < 10000 {
			t.Errorf("warren_session_bytes_total{direction=%s} moved %v while the session carried 10000 bytes each way", dir, d)
		}
	}
	conn.Close()
	var after scrape
	waitFor(t, "the session's end in the metrics", func() bool {
		_, after = getMetrics(t, url, token)
		return after.value("warren_sessions") == 0 && after.value("warren_sessions_ended_total", "outcome", "ok") > before.value("warren_sessions_ended_total", "outcome", "ok")
	})
	if d := after.value("warren_session_duration_seconds") - before.value("warren_session_duration_seconds"); d != 1 {
		t.Errorf("warren_session_duration_seconds observed %v sessions; want 1", d)
	}

	// An unknown resource: refused, counted as unavailable.
	if _, err := c.Dial("tcp", "nope:7"); err == nil {
		t.Fatal("a session to an unknown resource opened")
	}
	_, s := getMetrics(t, url, token)
	checkMoved(t, "an unknown resource", after, s, []moved{{"warren_sessions_started_total", []string{"result", "unavailable"}, 1}})
	after = s

	// Failover: agent-1 (local to proxy-1) is frozen, so its route is still
	// listed; a new session tries it first, times out, and moves on to
	// agent-2 through the peer.
	if err := a1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer a1.cmd.Process.Signal(syscall.SIGCONT)
	conn, err = c.Dial("tcp", "echo:7")
	if err != nil {
		t.Fatalf("the session did not fail over to agent-2: %v", err)
	}
	roundTrip(conn, 100)
	_, failed := getMetrics(t, url, token)
	checkMoved(t, "a failover", after, failed, []moved{
		{"warren_dial_attempts_total", []string{"path", "local", "result", "error"}, 1},
		{"warren_dial_failovers_total", []string{"path", "peer"}, 1},
		{"warren_dial_attempts_total", []string{"path", "peer", "result", "ok"}, 1},
		{"warren_session_leg_rtt_seconds", []string{"leg", "peer"}, 1},
		{"warren_sessions", nil, 1},
	})
	conn.Close()
	a1.cmd.Process.Signal(syscall.SIGCONT)
	// The one line per session end, with its outcome and timings.
	viaPeer := "path=" + p0.ID + ">" + m.proxies[1].ID + ">"
	var ended string
	waitFor(t, "the failed-over session's end in the proxy's log", func() bool {
		logs, err := os.ReadFile(p0.Logs[len(p0.Logs)-1])
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(logs)) {
			if strings.Contains(line, "session ended") && strings.Contains(line, viaPeer) {
				ended = line
			}
		}
		return ended != ""
	})
	for _, field := range []string{"user=alice", "outcome=ok", "duration=", "connect=", "user_rtt=", "peer_rtt=", "agent_rtt=", "bytes_up=100 ", "bytes_down=100", "resource=echo"} {
		if !strings.Contains(ended, field) {
			t.Errorf("the session's end in the proxy's log lacks %q: %q", field, ended)
		}
	}

	// The agent's metrics, on its debug_listen.
	aurl := "http://" + debugAddr + "/metrics"
	if code, _ := getMetrics(t, aurl, ""); code != http.StatusUnauthorized {
		t.Errorf("the agent's /metrics without its token: %d; want 401", code)
	}
	var as scrape
	waitFor(t, "agent-2's heartbeat in its metrics", func() bool {
		_, as = getMetrics(t, aurl, debugToken)
		return as.fams["warren_agent_heartbeat_age_seconds"] != nil
	})
	promtoolCheck(t, "the agent's /metrics", as.text)
	if v := as.value("warren_agent_tunnels", "proxy", m.proxies[1].ID); v < 1 {
		t.Errorf("warren_agent_tunnels{proxy=%s} = %v; want at least 1", m.proxies[1].ID, v)
	}
	if v := as.value("warren_agent_resource_up", "resource", "echo"); v != 1 {
		t.Errorf("warren_agent_resource_up{resource=echo} = %v; want 1", v)
	}
	if age := as.value("warren_agent_heartbeat_age_seconds"); age < 0 || age > 60 {
		t.Errorf("warren_agent_heartbeat_age_seconds = %v", age)
	}
	checkDashboard(t, "../../deploy/grafana/warren.json", failed, as)
}

// metricRef finds the metric names in a PromQL expression: ours and the
// Go client's standard ones all start with these prefixes, and no label
// or function does.
var metricRef = regexp.MustCompile(`\b(?:warren|go|process)_[a-zA-Z0-9_]+`)

// checkDashboard checks every query of the Grafana dashboard at path: it
// parses as PromQL (promtool check rules, on the queries as recording
// rules, Grafana's variables given values) and every metric it names is
// one the scrapes hold (a histogram's _bucket, _sum and _count by its
// family).
func checkDashboard(t *testing.T, path string, scrapes ...scrape) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	exists := func(name string) bool {
		for _, s := range scrapes {
			if s.fams[name] != nil {
				return true
			}
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if f := s.fams[strings.TrimSuffix(name, suffix)]; f != nil && strings.HasSuffix(name, suffix) && f.GetType() == dto.MetricType_HISTOGRAM {
					return true
				}
			}
		}
		return false
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	queries := 0
	check := func(where, expr string) {
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: query %q names no metric", where, expr)
		}
		for _, name := range refs {
			if !exists(name) {
				t.Errorf("%s: query %q names %s, which no proxy or agent serves", where, expr, name)
			}
		}
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$instance", ".*", "${datasource}", "")
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			check("panel "+strconv.Quote(p.Title), tg.Expr)
			fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", queries, strconv.Quote(vars.Replace(tg.Expr)))
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok && strings.HasPrefix(q, "label_values(") {
			check("variable", q)
		}
	}
	if queries < 20 {
		t.Errorf("%s has %d queries; the dashboard lost its panels", path, queries)
	}
	needClients(t, "prometheus", "promtool")
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "promtool", "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries do not all parse as PromQL (promtool check rules): %v\n%s", err, out)
	}
	if !t.Failed() {
		t.Logf("%s: %d queries, each parses and names metrics that exist", path, queries)
	}
}

// moved is a metric's expected change between two scrapes.
type moved struct {
	name   string
	labels []string
	delta  float64
}

func checkMoved(t *testing.T, when string, a, b scrape, want []moved) {
	t.Helper()
	for _, w := range want {
		if d := b.value(w.name, w.labels...) - a.value(w.name, w.labels...); d != w.delta {
			t.Errorf("after %s, %s%v moved by %v; want %v", when, w.name, w.labels, d, w.delta)
		}
	}
}
