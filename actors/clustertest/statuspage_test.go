package clustertest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/internal/model"
)

// chromium is the path of Debian's chromium, or skips t without it; with
// WARREN_REQUIRE_CHROMIUM set (.ci/run installs it) it fails t instead.
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	msg := "chromium is not installed (apt-get install chromium)"
	if os.Getenv("WARREN_REQUIRE_CHROMIUM") != "" {
		t.Fatalf("%s; WARREN_REQUIRE_CHROMIUM is set", msg)
	}
	t.Skip(msg)
	return ""
}

// Label values an agent reports, which the page must show as text: an
// agent is not trusted with the operator's browser.
const (
	scriptLabel = `<script>document.body.remove()</script>`
	imgLabel    = `"><img src onerror>`
)

// pageTables is what the status page shows: each table's rows, each row
// its cells' text.
type pageTables map[string][][]string

const readTables = `(() => {
	const out = {};
	for (const id of ['proxies', 'agents', 'resources', 'sessions', 'failovers']) {
		out[id] = [...document.querySelectorAll('#' + id + ' tbody tr')].map(
			(tr) => [...tr.children].map((c) => c.textContent));
	}
	return JSON.stringify(out);
})()`

// row is the first row of table whose first cell is first.
func (p pageTables) row(table, first string) []string {
	for _, r := range p[table] {
		if len(r) > 0 && r[0] == first {
			return r
		}
	}
	return nil
}

// TestStatusPageInChromium signs in to a proxy's status page in headless
// Chromium through its form (a wrong token first), waits for the tables of
// a two-proxy cluster with two agents, a running ssh session and a session
// that failed over, checks what they show (the peer link's RTT, the
// agents, the resources' health and replicas, the session's login and
// path, the failover's from, to and why; an agent's labels as text, not
// HTML), takes a screenshot, signs out, and finally stops the proxy to see
// the page say it does not answer.
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	upstream := closingListener(t)
	// agent-1's upstream of pool goes away once it is routed; the agent
	// checks it only every 10 minutes, so the proxies still send sessions
	// there, and they fail over to agent-2. agent-1 starts first, so its
	// tunnel is on proxy-1, agent-2's on proxy-2: proxy-1 tries agent-1
	// first (the default strategy prefers a local tunnel).
	vanishing := closingListener(t)
	c := New(t, Options{
		Proxies: 2, Runner: RunProcesses,
		Agents: map[string][]agent.ResourceConfig{
			"agent-1": {
				{Name: "node1", Kind: "ssh"},
				{Name: "web", Kind: "tcp", Addr: upstream.Addr().String(), Labels: map[string]string{"note": scriptLabel, "tier": imgLabel}},
				{Name: "pool", Kind: "tcp", Addr: vanishing.Addr().String()},
			},
		},
		Agent: func(name string, cfg *agent.Config) {
			if name == "agent-1" {
				cfg.HealthInterval = 10 * time.Minute
			}
		},
	})
	c.StartAgent("agent-2", []agent.ResourceConfig{{Name: "pool", Kind: "tcp", Addr: upstream.Addr().String()}})
	agent1, agent2 := c.Agents["agent-1"].ID(), c.Agents["agent-2"].ID()
	token, err := c.Auth.APIToken()
	if err != nil {
		t.Fatal(err)
	}
	p1 := c.Proxies[0]
	base := "http://" + p1.H.HTTP

	// Without the token the API answers 401, and the page sends to the
	// sign-in form.
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer noRedirect.CloseIdleConnections()
	for path, want := range map[string]int{"/api/v1/overview": http.StatusUnauthorized, "/status": http.StatusSeeOther} {
		res, err := noRedirect.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s without the token: %d, want %d", path, res.StatusCode, want)
		}
	}

	// Sessions to pool until one fails over from agent-1 to agent-2 (the
	// first does, unless agent-2 came to hold a tunnel on proxy-1 too).
	overview := func() (ov model.Overview) {
		t.Helper()
		if err := c.H.API(p1.H, "/api/v1/overview", &ov); err != nil {
			t.Fatal(err)
		}
		return ov
	}
	c.WaitFor("pool served by both agents", func() bool {
		for _, r := range overview().Resources {
			if r.Name == "pool" {
				return r.Healthy == 2
			}
		}
		return false
	})
	vanishing.Close()
	for i := 0; i < 8 && len(overview().Failovers) == 0; i++ {
		c.Run(strings.NewReader(""), "ssh", "-W", "pool:80", p1.ID())
	}
	if n := len(overview().Failovers); n == 0 {
		t.Fatalf("no session to pool failed over from agent-1 in 8")
	}

	// A session that runs while the page is read.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ssh := exec.CommandContext(ctx, "ssh", "-F", c.SSHConfig, "node1", "sleep", "120")
	if err := ssh.Start(); err != nil {
		t.Fatal(err)
	}
	sshDone := make(chan error, 1)
	go func() { sshDone <- ssh.Wait() }()
	stopSSH := func() {
		if ssh.Process != nil {
			_ = ssh.Process.Kill()
		}
		<-sshDone
	}
	defer func() {
		if sshDone != nil {
			stopSSH()
		}
	}()

	alloc, stopAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // as root, Chromium's sandbox does not start
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)...)
	defer stopAlloc()
	browser, stopBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer stopBrowser()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(browser, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	location := func() string {
		t.Helper()
		loc, err := chromedp.Run(browser, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	waitFor := func(what, cond string) {
		t.Helper()
		if _, err := chromedp.Run(browser, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}

	// Signed out, the page sends to the form; a wrong token is refused
	// with a sentence that says which token to paste.
	do("open the page", chromedp.Navigate(base+"/status"))
	if loc := location(); !strings.HasSuffix(loc, "/status/login") {
		t.Fatalf("signed out, /status went to %s, want the sign-in form", loc)
	}
	do("sign in with a wrong token",
		chromedp.SendKeys("#token", "wrong-"+token), chromedp.Click("#signin"), chromedp.WaitVisible("#problem"))
	problem, err := chromedp.Run(browser, chromedp.Text("#problem"))
	if err != nil || !strings.Contains(problem, "not the cluster's API token") || !strings.Contains(problem, "api_token") {
		t.Errorf("a wrong token is told %q (%v)", problem, err)
	}

	do("sign in", chromedp.SendKeys("#token", token), chromedp.Click("#signin"), chromedp.WaitVisible("#proxies"))
	waitFor("the tables, with the ssh session and its login, and proxy-2's RTT", `document.body.dataset.state === 'ok'
		&& [...document.querySelectorAll('#sessions tr[data-session]')].some((tr) => tr.children[3].textContent === 'node1' && tr.children[2].textContent !== '')
		&& / ms$/.test((document.querySelector('#proxies tr[data-proxy="proxy-2"] td:nth-child(5)') || {}).textContent || '')
		&& document.querySelector('#resources tr[data-resource="web"]') !== null`)
	if loc := location(); !strings.HasSuffix(loc, "/status") {
		t.Errorf("signed in at %s, want /status", loc)
	}
	raw, err := chromedp.Run(browser, chromedp.Evaluate[string](readTables))
	if err != nil {
		t.Fatal(err)
	}
	var tables pageTables
	if err := json.Unmarshal([]byte(raw), &tables); err != nil {
		t.Fatal(err)
	}
	t.Logf("the page shows: %s", raw)

	// Regions and proxies: this proxy, and the peer link to the other
	// with its round trip.
	if r := tables.row("proxies", "Region local"); r == nil {
		t.Errorf("no region line: %v", tables["proxies"])
	}
	if r := tables.row("proxies", "proxy-1"); len(r) < 5 || r[2] != "alive" || r[3] != "this proxy" {
		t.Errorf("proxy-1 line %q, want alive, this proxy", r)
	}
	if r := tables.row("proxies", "proxy-2"); len(r) < 5 || r[2] != "alive" || r[3] != "ok" || !regexp.MustCompile(`^\d+\.\d\d ms$`).MatchString(r[4]) {
		t.Errorf("proxy-2 line %q, want alive, link ok, an RTT in ms", r)
	}
	// Each agent, online through some proxy (a loaded machine may see a
	// tunnel move, which leaves an offline line for the old proxy).
	onlineWith := func(agent, resources string) bool {
		for _, r := range tables["agents"] {
			if len(r) >= 5 && r[0] == agent && r[3] == "online" && r[4] == resources {
				return true
			}
		}
		return false
	}
	if !onlineWith(agent1, "3") {
		t.Errorf("agents %q, want %s online with 3 resources", tables["agents"], agent1)
	}
	if !onlineWith(agent2, "1") {
		t.Errorf("agents %q, want %s online with 1 resource", tables["agents"], agent2)
	}
	// Resources with health and replicas, labels as the agent sent them.
	if r := tables.row("resources", "node1"); len(r) < 4 || r[1] != "ssh" || r[2] != "online" || r[3] != "1 / 1" {
		t.Errorf("node1 line %q, want ssh, online, 1 / 1", r)
	}
	if r := tables.row("resources", "pool"); len(r) < 4 || r[2] != "online" || r[3] != "2 / 2" {
		t.Errorf("pool line %q, want online, 2 / 2", r)
	}
	if r := tables.row("resources", "web"); len(r) < 5 || r[2] != "online" || r[4] != "note="+scriptLabel+", tier="+imgLabel {
		t.Errorf("web line %q, want online and its labels as text", r)
	}
	// The session, on the agent, and its path.
	// (The sessions to pool may still be ending.)
	var shell []string
	for _, r := range tables["sessions"] {
		if len(r) >= 6 && r[3] == "node1" {
			shell = r
		}
	}
	// Its path starts here and ends at the agent (through proxy-2 if the
	// agent's tunnel moved, and the session resumed over it).
	if len(shell) < 6 || shell[1] != c.User || shell[2] != c.Login || shell[4] != agent1 ||
		!strings.HasPrefix(shell[5], "proxy-1>") || !strings.HasSuffix(shell[5], ">"+agent1) {
		t.Errorf("sessions %q, want %s's session to node1 as %s on %s from proxy-1", tables["sessions"], c.User, c.Login, agent1)
	}
	// The failover: when, kind, session, resource, from, to, why (newest
	// first; a resume may come after it).
	found := false
	for _, r := range tables["failovers"] {
		if len(r) >= 7 && r[1] == "connect" && r[3] == "pool" &&
			strings.HasSuffix(r[4], ">"+agent1) && strings.HasSuffix(r[5], ">"+agent2) && strings.Contains(r[6], "upstream") {
			found = true
		}
	}
	if !found {
		t.Errorf("failovers %q, want pool's from %s to %s, saying the upstream failed", tables["failovers"], agent1, agent2)
	}
	// The labels did not become elements: nothing in the tables but rows
	// and cells of text.
	n, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll('main script, main img, main td *').length`))
	if err != nil || n != 0 {
		t.Errorf("%d elements inside the tables' cells (%v): a label became HTML", n, err)
	}

	png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := screenshotPath(t, "warren-status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page: %s", shot)

	// Signing out ends the sign-in: the page sends to the form again.
	do("sign out", chromedp.Click("#signout"), chromedp.WaitVisible("#token"))
	do("open the page signed out", chromedp.Navigate(base+"/status"), chromedp.WaitVisible("#token"))
	if loc := location(); !strings.HasSuffix(loc, "/status/login") {
		t.Errorf("after signing out, /status went to %s, want the sign-in form", loc)
	}

	// Signed in again, the page says when its proxy stops answering.
	do("sign in again", chromedp.SendKeys("#token", token), chromedp.Click("#signin"), chromedp.WaitVisible("#proxies"))
	waitFor("the tables", `document.body.dataset.state === 'ok'`)
	stopSSH()
	sshDone = nil
	c.StopProxy(p1.ID())
	waitFor("the error banner", `document.body.dataset.state === 'error' && !document.getElementById('error').hidden`)
	banner, err := chromedp.Run(browser, chromedp.Text("#error"))
	if err != nil || !strings.Contains(banner, "does not answer") {
		t.Errorf("banner %q (%v), want it to say the proxy does not answer", banner, err)
	}
	png, err = chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err == nil {
		shot = screenshotPath(t, "warren-status-page-down.png")
		err = os.WriteFile(shot, png, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the page after its proxy stopped: %s", shot)
}

// closingListener accepts connections on 127.0.0.1 and closes them, until
// the test ends: a tcp resource's upstream.
func closingListener(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// screenshotPath is where a screenshot goes: $WARREN_SCREENSHOT_DIR, or
// the temporary directory, under a fixed name that each run overwrites.
func screenshotPath(t *testing.T, name string) string {
	dir := os.Getenv("WARREN_SCREENSHOT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}
