package main

// The attack battery: each finding of the trust review, replayed against
// real warren processes and the stock OpenSSH client, and shown refused
// with a clear message while everyone else is served.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/echo"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/storage/audit"
	"github.com/warren-proxy/warren/transport/pki"
	"github.com/warren-proxy/warren/transport/revtunnel"
)

// trustCluster is one proxy process and the files of writeCluster: the
// admin user alice, the static join token, the CA pin.
type trustCluster struct {
	t                         *testing.T
	h                         *harness.Cluster
	dir, auth                 string
	proxyCfg, agentCfg        string
	user, tunnel, http        string
	token, pin, me, sshConfig string
	proxy                     *proc
}

func newTrustCluster(t *testing.T) *trustCluster {
	t.Helper()
	c := &trustCluster{t: t}
	h, p, a := writeHarness(t)
	c.h = h
	c.dir, c.proxyCfg, c.agentCfg = h.Dir, p.Config, a.Config
	c.user, c.tunnel, c.http = p.User, p.Tunnel, p.HTTP
	c.token, c.pin = a.Token, h.Pin
	c.auth = h.AuthDir
	c.sshConfig = filepath.Join(c.dir, "ssh_config")
	c.me = currentLogin(t)
	// Short HTTP idle timeout, so a test can see idle connections closed.
	f, err := os.OpenFile(c.proxyCfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "http:\n  idle_timeout: 1s\n")
	f.Close()
	c.proxy = start(t, "proxy", "--config", c.proxyCfg)
	// Both listeners: tests dial the tunnel port too (a join), and the
	// user port may answer a moment before it.
	waitFor(t, "proxy ready", func() bool {
		for _, addr := range []string{c.user, c.tunnel} {
			cn, err := net.Dial("tcp", addr)
			if err != nil {
				return false
			}
			cn.Close()
		}
		return true
	})
	return c
}

func currentLogin(t *testing.T) string {
	out, err := exec.Command("id", "-un").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// admin runs a client command as alice (role admin).
func (c *trustCluster) admin(args ...string) (string, string, int) {
	c.t.Helper()
	return runWarren(c.t, append(args, "--proxy", c.user, "-i", filepath.Join(c.dir, "alice"))...)
}

// adminOK is admin that fails the test on a non-zero exit.
func (c *trustCluster) adminOK(args ...string) string {
	c.t.Helper()
	out, errs, code := c.admin(args...)
	if code != 0 {
		c.t.Fatalf("warren %s: code %d stderr %q", strings.Join(args, " "), code, errs)
	}
	return out
}

// agent writes an agent config (resources as YAML list items) and starts it.
func (c *trustCluster) agent(name, token, resources string) *proc {
	c.t.Helper()
	a := &harness.Agent{Name: name, Proxies: []string{c.tunnel}, Token: token, Extra: "resources:\n" + resources}
	if err := c.h.WriteAgentConfig(a); err != nil {
		c.t.Fatal(err)
	}
	return start(c.t, "agent", "--config", a.Config)
}

// user issues a certificate for name with roles and logins, and writes an
// ssh_config for it: Host proxy-1 and the resources behind it.
func (c *trustCluster) userConfig(name, roles string, logins []string, hosts ...string) string {
	c.t.Helper()
	out := filepath.Join(c.dir, name)
	if _, errs, code := runWarren(c.t, "user", "add", name, "--logins", strings.Join(logins, ","), "--roles", roles, "--data-dir", c.auth, "--out", out); code != 0 {
		c.t.Fatalf("user add %s: code %d stderr %q", name, code, errs)
	}
	host, port, _ := net.SplitHostPort(c.user)
	cfg := filepath.Join(out, "ssh_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`Host proxy-1
    HostName %[1]s
    Port %[2]s
    User %[3]s
    IdentityFile %[4]s/%[3]s
    CertificateFile %[4]s/%[3]s-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile %[4]s/known_hosts
    StrictHostKeyChecking yes
Host %[5]s
    ProxyJump proxy-1
    User %[6]s
    IdentityFile %[4]s/%[3]s
    CertificateFile %[4]s/%[3]s-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile %[4]s/known_hosts_resources
    StrictHostKeyChecking yes
`, host, port, name, out, strings.Join(hosts, " "), logins[0])), 0o644)
	return cfg
}

// auditEvents returns the proxy's audit log as alice sees it.
func (c *trustCluster) auditEvents() []audit.Event {
	c.t.Helper()
	out := c.adminOK("audit", "--since", "1h", "--json", "--limit", "10000")
	var evs []audit.Event
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			c.t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// joinAs joins like an agent would, with the given token and requested
// names, and returns the signer holding the certificate it got.
func (c *trustCluster) joinAs(name, token string, principals []string) (ssh.Signer, *ssh.Certificate, revtunnel.JoinResponse) {
	c.t.Helper()
	key, _, err := pki.GenerateKey()
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, _, err := revtunnel.Join(ctx, c.tunnel, token, revtunnel.JoinRequest{
		Name: name, PublicKey: string(ssh.MarshalAuthorizedKey(key.PublicKey())), Principals: principals,
	}, revtunnel.Trust{Pin: c.pin})
	if err != nil {
		c.t.Fatalf("join as %s: %v", name, err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.HostCert))
	if err != nil {
		c.t.Fatal(err)
	}
	cert := pub.(*ssh.Certificate)
	signer, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		c.t.Fatal(err)
	}
	return signer, cert, resp
}

// tunnelAs opens a tunnel with a joined identity.
func (c *trustCluster) tunnelAs(id string, signer ssh.Signer, principals []string) (*revtunnel.ClientConn, revtunnel.HelloReply) {
	c.t.Helper()
	_, proxyCA, _, err := pki.LoadPublic(c.auth)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tun, reply, err := revtunnel.Dial(ctx, revtunnel.ClientConfig{Addr: c.tunnel, AgentID: id, Signer: signer, Trust: revtunnel.Trust{CA: proxyCA}}, revtunnel.Hello{Version: "evil", Principals: principals})
	if err != nil {
		c.t.Fatalf("tunnel as %s: %v", id, err)
	}
	c.t.Cleanup(func() { tun.Close() })
	return tun, reply
}

func (c *trustCluster) sshOK(cfg string, args ...string) string {
	c.t.Helper()
	out, errs, code := sshRun(c.t, cfg, args...)
	if code != 0 {
		c.t.Fatalf("ssh %s: code %d stderr %q", strings.Join(args, " "), code, errs)
	}
	return out
}

// TestAttackResourceHijack replays finding 1: an agent with the shared
// join token asks for node1 (and the proxy's names), tunnels and
// heartbeats node1. It gets a certificate for none of them, its
// heartbeat for node1 is refused, node1 stays 1/1, and every user session
// reaches the real agent.
func TestAttackResourceHijack(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })

	asked := []string{"node1", "proxy-1", "127.0.0.1", "localhost"}
	signer, cert, resp := c.joinAs("evil", c.token, asked)
	if got, want := cert.ValidPrincipals, []string{pki.AgentPrincipal(resp.AgentID)}; !slices.Equal(got, want) {
		t.Fatalf("attacker's certificate principals: got %v, want only %v", got, want)
	}
	if len(resp.Refused) != len(asked) {
		t.Fatalf("join refusals: got %+v, want one per name asked for", resp.Refused)
	}
	for _, r := range resp.Refused {
		if r.Name == "node1" && !strings.Contains(r.Reason, "claimed by agent agent-1-") {
			t.Errorf("node1 refused at join with %q, want it named as agent-1's", r.Reason)
		}
	}
	tun, reply := c.tunnelAs(resp.AgentID, signer, []string{"node1"})
	if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(reply.HostCert)); err != nil || slices.Contains(pub.(*ssh.Certificate).ValidPrincipals, "node1") {
		t.Fatalf("renewed certificate at hello: %v (err %v), want it without node1", pub, err)
	}
	hb, err := tun.Heartbeat(context.Background(), revtunnel.Heartbeat{Seq: 1, Resources: []revtunnel.ResourceStatus{{Name: "node1", Kind: "ssh", Healthy: true}}})
	if err != nil || len(hb.Refused) != 1 || !strings.Contains(hb.Refused[0].Reason, "claimed by agent agent-1") {
		t.Fatalf("attacker's heartbeat for node1: got %+v, %v; want node1 refused as agent-1's", hb, err)
	}
	out := c.sshOK(c.sshConfig, "proxy-1", "ls")
	if !regexpLine(out, `node1\s+ssh\s+online\s+1/1`) {
		t.Fatalf("ls after the attack:\n%s\nwant node1 online 1/1", out)
	}
	for i := range 12 {
		if got := c.sshOK(c.sshConfig, "node1", "echo", fmt.Sprint(i)); got != fmt.Sprintf("%d\n", i) {
			t.Fatalf("session %d: got %q", i, got)
		}
	}
	for _, ev := range c.auditEvents() {
		if ev.Type == "session.start" && ev.Resource == "node1" && !strings.HasPrefix(ev.AgentID, "agent-1-") {
			t.Errorf("a node1 session went to agent %s", ev.AgentID)
		}
	}
}

// regexpLine reports whether a line of text matches pattern.
func regexpLine(text, pattern string) bool {
	re := regexp.MustCompile(pattern)
	for _, l := range strings.Split(text, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// TestAttackAgentCertificateIsNoProxy replays finding 2: an agent's
// certificate presented as a proxy is refused by stock OpenSSH with the
// known_hosts Warren writes for proxies, and an agent with ca_pin will not
// join such an impostor (its token never leaves it).
func TestAttackAgentCertificateIsNoProxy(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	signer, _, _ := c.joinAs("impostor", c.token, nil)
	var passwords atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) {
			passwords.Add(1)
			return nil, fmt.Errorf("no")
		},
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, fmt.Errorf("no") },
	}
	cfg.AddHostKey(signer)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				ssh.NewServerConn(nc, cfg)
			}()
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, alias := range []string{"proxy-1", "127.0.0.1", "localhost"} {
		_, errs, code := runCmd(t, "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile="+filepath.Join(c.dir, "known_hosts"), "-o", "HostKeyAlias="+alias,
			"-i", filepath.Join(c.dir, "alice"), "-p", port, "alice@"+host, "ls")
		if code != 255 || !strings.Contains(errs, "Host key verification failed") {
			t.Errorf("ssh to an impostor proxy as %s: code %d stderr %q, want host key verification to fail", alias, code, errs)
		}
	}
	cfgPath := filepath.Join(c.dir, "victim.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("name: victim\ndata_dir: %s\nproxies: [%s]\njoin_token: %s\nca_pin: %s\nresources:\n  - {name: v1, kind: ssh}\n",
		filepath.Join(c.dir, "victim"), ln.Addr(), c.token, c.pin)), 0o600)
	victim := start(t, "agent", "--config", cfgPath)
	waitFor(t, "the victim agent to refuse the impostor", func() bool {
		return strings.Contains(victim.stderr.String(), "does not match ca_pin")
	})
	if n := passwords.Load(); n != 0 {
		t.Fatalf("the impostor received %d join token(s)", n)
	}
}

// TestRolesDevReachesOnlyDev: a user with role dev (env=dev) lists and
// reaches only env=dev resources, tcp ones included; the node refuses a
// login the role does not allow even when the proxy let the session
// through; denied attempts are audited; the user cannot read the audit log.
func TestRolesDevReachesOnlyDev(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go echo.Serve(ln, nil)
	defer ln.Close()
	c.agent("agent-1", c.token, fmt.Sprintf(`  - {name: node1, kind: ssh}
  - {name: node-dev, kind: ssh, labels: {env: dev}}
  - {name: node-prod, kind: ssh, labels: {env: prod}}
  - {name: db-dev, kind: tcp, addr: %[1]s, labels: {env: dev}}
  - {name: db-prod, kind: tcp, addr: %[1]s, labels: {env: prod}}
`, ln.Addr()))
	waitFor(t, "five resources online", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Count(out, "online") == 5
	})
	role := filepath.Join(c.dir, "dev.yaml")
	os.WriteFile(role, []byte(fmt.Sprintf("name: dev\nallow:\n  logins: [%s]\n  resources: {env: dev}\n", c.me)), 0o644)
	c.adminOK("role", "create", "-f", role)
	other := "nobody"
	bob := c.userConfig("bob", "dev", []string{c.me, other}, "node-dev", "node-prod")

	out := c.sshOK(bob, "proxy-1", "ls")
	for name, want := range map[string]bool{"node-dev": true, "db-dev": true, "node-prod": false, "db-prod": false} {
		if strings.Contains(out, name) != want {
			t.Errorf("bob's ls: %s listed=%v, want %v:\n%s", name, !want, want, out)
		}
	}
	if got := c.sshOK(bob, "node-dev", "echo", "ok"); got != "ok\n" {
		t.Fatalf("bob on node-dev: got %q", got)
	}
	_, errs, code := sshRun(t, bob, "node-prod", "true")
	if code == 0 || !strings.Contains(errs, "access denied: role dev does not allow resource node-prod (env=prod)") {
		t.Fatalf("bob on node-prod: code %d stderr %q, want the role's refusal", code, errs)
	}
	echoOut, errs, code := runCmdInput(t, "ping\n", "ssh", "-F", bob, "-o", "BatchMode=yes", "-W", "db-dev:9", "proxy-1")
	if code != 0 || echoOut != "ping\n" {
		t.Fatalf("bob to db-dev: got %q code %d stderr %q", echoOut, code, errs)
	}
	_, errs, code = runCmdInput(t, "ping\n", "ssh", "-F", bob, "-o", "BatchMode=yes", "-W", "db-prod:9", "proxy-1")
	if code == 0 || !strings.Contains(errs, "access denied: role dev does not allow resource db-prod (env=prod)") {
		t.Fatalf("bob to db-prod: code %d stderr %q, want the role's refusal", code, errs)
	}
	if c.me != other {
		// The proxy lets the session through (bob has a login the role
		// allows there); the node decides on the login bob picked.
		_, errs, code = sshRun(t, bob, other+"@node-dev", "true")
		if code == 0 || !strings.Contains(errs, "login "+other+" on resource node-dev is not allowed for you") {
			t.Fatalf("bob as %s on node-dev: code %d stderr %q, want the node's refusal", other, code, errs)
		}
	}
	// Forwarding on the node: admin's roles allow it, dev's do not.
	target := ln.Addr().String()
	if out, errs, code := runCmdInput(t, "fwd\n", "ssh", "-F", c.sshConfig, "-o", "BatchMode=yes", "-W", target, "node1"); out != "fwd\n" {
		t.Fatalf("alice forwarding through node1: %q code %d stderr %q", out, code, errs)
	}
	_, errs, code = runCmdInput(t, "fwd\n", "ssh", "-F", bob, "-o", "BatchMode=yes", "-W", target, "node-dev")
	if code == 0 || !strings.Contains(errs, "do not allow port forwarding on node-dev") {
		t.Fatalf("bob forwarding through node-dev: code %d stderr %q, want the roles' refusal", code, errs)
	}
	_, errs, code = sshRun(t, bob, "proxy-1", "audit")
	if code == 0 || !strings.Contains(errs, "audit needs a role that allows it") {
		t.Fatalf("bob's audit: code %d stderr %q", code, errs)
	}
	denied := map[string]bool{}
	for _, ev := range c.auditEvents() {
		if ev.Type == "session.denied" && ev.User == "bob" {
			denied[ev.Resource] = true
		}
	}
	if !denied["node-prod"] || !denied["db-prod"] {
		t.Fatalf("denied attempts audited: %v, want node-prod and db-prod", denied)
	}
}

// runCmdInput is runCmd with stdin.
func runCmdInput(t *testing.T, stdin, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestJoinTokens: a token granting web-* cannot serve node1; a single-use
// token cannot join twice; an expired or removed token cannot join.
func TestJoinTokens(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go echo.Serve(ln, nil)
	defer ln.Close()

	web := strings.TrimSpace(c.adminOK("token", "add", "--resources", "web-*", "--ttl", "10m"))
	wa := c.agent("web-agent", web, fmt.Sprintf("  - {name: node1, kind: ssh}\n  - {name: web-1, kind: tcp, addr: %s}\n", ln.Addr()))
	waitFor(t, "web-1 online", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Contains(out, "web-1")
	})
	waitFor(t, "the web agent told node1 is refused", func() bool {
		return strings.Contains(wa.stderr.String(), "node1: resource node1 is outside this agent's grant (web-*")
	})
	if out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls"); strings.Contains(out, "node1") {
		t.Fatalf("an agent whose token grants web-* serves node1:\n%s", out)
	}

	once := strings.TrimSpace(c.adminOK("token", "add", "--uses", "1", "--resources", "db-*"))
	c.agent("db-a", once, fmt.Sprintf("  - {name: db-1, kind: tcp, addr: %s}\n", ln.Addr()))
	waitFor(t, "db-1 online", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Contains(out, "db-1")
	})
	second := c.agent("db-b", once, fmt.Sprintf("  - {name: db-2, kind: tcp, addr: %s}\n", ln.Addr()))
	exitsWith(t, second, "has been used 1 of 1 times")

	short := strings.TrimSpace(c.adminOK("token", "add", "--ttl", "2s"))
	var tokens []access.Token
	if err := json.Unmarshal([]byte(c.adminOK("token", "ls", "--json")), &tokens); err != nil {
		t.Fatal(err)
	}
	var expires time.Time
	for _, tk := range tokens {
		if tk.ID == access.TokenID(short) {
			expires = tk.Expires
		}
		if tk.Hash != "" {
			t.Errorf("token ls shows the hash of token %s", tk.ID)
		}
	}
	time.Sleep(time.Until(expires) + 100*time.Millisecond) // the condition is the clock itself
	exitsWith(t, c.agent("late", short, "  - {name: late-1, kind: ssh}\n"), "expired at")

	removed := strings.TrimSpace(c.adminOK("token", "add"))
	c.adminOK("token", "rm", access.TokenID(removed))
	exitsWith(t, c.agent("gone", removed, "  - {name: gone-1, kind: ssh}\n"), "join token refused")
}

// exitsWith waits for an agent process to exit and checks its message.
func exitsWith(t *testing.T, p *proc, want string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if err == nil || !strings.Contains(p.stderr.String(), want) {
			t.Fatalf("agent exited with %v, stderr:\n%s\nwant an error containing %q", err, p.stderr.String(), want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("agent still runs; stderr:\n%s\nwant it to exit with %q", p.stderr.String(), want)
	}
}

// TestLocks: a locked user's live session ends within seconds and new
// logins are refused with the lock's message; a locked agent and the
// agents of a locked token lose their tunnels and cannot return; unlocking
// restores each; everyone else is served throughout.
func TestLocks(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })
	bob := c.userConfig("bob", "access", []string{c.me}, "node1")

	live := exec.Command("ssh", "-F", bob, "-o", "BatchMode=yes", "node1", "echo started; sleep 60")
	stdout, _ := live.StdoutPipe()
	var liveErr strings.Builder
	live.Stderr = &liveErr
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- live.Wait() }()
	t.Cleanup(func() { live.Process.Kill(); <-done })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "started\n" {
		t.Fatalf("bob's session printed %q", line)
	}
	locked := time.Now()
	c.adminOK("lock", "user", "bob", "--message", "left the company")
	select {
	case err := <-done:
		done <- err
		t.Logf("bob's live session ended %s after the lock (err %v)", time.Since(locked).Round(time.Millisecond), err)
		if !strings.Contains(liveErr.String(), "warren: access denied: user bob is locked by an administrator: left the company") {
			t.Errorf("bob's live session ended without saying why; stderr %q", liveErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bob's live session still runs 30 s after the lock")
	}
	_, errs, code := sshRun(t, bob, "proxy-1", "ls")
	if code == 0 || !strings.Contains(errs, "user bob is locked by an administrator: left the company") {
		t.Fatalf("bob after the lock: code %d stderr %q", code, errs)
	}
	c.sshOK(c.sshConfig, "node1", "true") // alice is served
	c.adminOK("lock", "rm", "user", "bob")
	c.sshOK(bob, "node1", "true")

	var agentID string
	for _, ev := range c.auditEvents() {
		if ev.Type == "session.start" && ev.Resource == "node1" {
			agentID = ev.AgentID
		}
	}
	offline := func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Contains(out, "offline")
	}
	online := func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" }
	c.adminOK("lock", "agent", agentID)
	waitFor(t, "the locked agent offline", offline)
	_, errs, code = sshRun(t, c.sshConfig, "node1", "true")
	if code == 0 || !strings.Contains(errs, "offline") {
		t.Fatalf("node1 with its agent locked: code %d stderr %q", code, errs)
	}
	c.adminOK("lock", "rm", "agent", agentID)
	waitFor(t, "the unlocked agent back", online)

	c.adminOK("lock", "token", access.TokenID(c.token))
	waitFor(t, "the agent of a locked token offline", offline)
	c.adminOK("lock", "rm", "token", access.TokenID(c.token))
	waitFor(t, "the agent back after its token is unlocked", online)
}

// TestAttackAbuseBounded replays finding 4: login reports for sessions the
// proxy never dialed, a 200 KB resource name, 4,000 resources and a huge
// label set, a flood of wrong join tokens, and `yes | head -1`: each is
// refused or bounded, and users are served throughout.
func TestAttackAbuseBounded(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })

	signer, _, resp := c.joinAs("evil", c.token, nil)
	tun, _ := c.tunnelAs(resp.AgentID, signer, nil)
	for i := range 10000 {
		if err := tun.ReportLogin(revtunnel.Login{SessionID: fmt.Sprintf("%016x", i), Login: "root"}); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	many := make([]revtunnel.ResourceStatus, 4000)
	for i := range many {
		many[i] = revtunnel.ResourceStatus{Name: fmt.Sprintf("r%d", i), Kind: "tcp"}
	}
	if _, err := tun.Heartbeat(context.Background(), revtunnel.Heartbeat{Seq: 1, Resources: many}); err == nil || !strings.Contains(err.Error(), "at most 256") {
		t.Errorf("4,000 resources: got %v, want them refused", err)
	}
	labels := map[string]string{}
	for i := range 32 {
		labels[fmt.Sprintf("k%d", i)] = strings.Repeat("v", 128)
	}
	fat := make([]revtunnel.ResourceStatus, 40) // 168 KB: more labels than allowed, in one SSH packet
	for i := range fat {
		fat[i] = revtunnel.ResourceStatus{Name: fmt.Sprintf("f%d", i), Kind: "tcp", Labels: labels}
	}
	if _, err := tun.Heartbeat(context.Background(), revtunnel.Heartbeat{Seq: 2, Resources: fat}); err == nil || !strings.Contains(err.Error(), "bytes of labels") {
		t.Errorf("a 168 KB label set: got %v, want it refused", err)
	}
	if _, err := tun.Heartbeat(context.Background(), revtunnel.Heartbeat{Seq: 3}); err != nil {
		t.Errorf("a normal heartbeat after the refused ones: %v", err)
	}

	// The name is longer than a command line takes: a Go client sends it.
	cf := clientFlags{proxy: c.user, identity: filepath.Join(c.dir, "alice"), knownHosts: filepath.Join(c.dir, "known_hosts")}
	client, _, err := cf.dialProxy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Dial("tcp", net.JoinHostPort(strings.Repeat("a", 200<<10), "22"))
	if err == nil || !strings.Contains(err.Error(), "is not a resource name") || len(err.Error()) > 4096 {
		t.Errorf("a 200 KB resource name: got %.300v (%d bytes), want a short refusal", err, len(fmt.Sprint(err)))
	}

	// One connection opening sessions without end: the proxy holds 256.
	var held []net.Conn
	refused := 0
	for range 300 {
		nc, err := client.Dial("tcp", "node1:22")
		if err != nil {
			if !strings.Contains(err.Error(), "the most the proxy allows on one connection") {
				t.Fatalf("session %d refused with %v, want the channel cap", len(held)+refused, err)
			}
			refused++
			continue
		}
		held = append(held, nc)
	}
	if len(held) != 256 || refused != 44 {
		t.Errorf("300 sessions on one connection: %d held, %d refused; want 256 and 44", len(held), refused)
	}
	c.sshOK(c.sshConfig, "node1", "true") // the same user on another connection is served
	for _, nc := range held {
		nc.Close()
	}
	client.Close()

	// An idle keep-alive HTTP connection is closed (http.idle_timeout 1s).
	hc, err := net.Dial("tcp", c.http)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	fmt.Fprintf(hc, "GET /healthz HTTP/1.1\r\nHost: warren\r\n\r\n")
	_ = hc.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(hc)
	status, _ := br.ReadString('\n')
	if !strings.Contains(status, "200") {
		t.Fatalf("GET /healthz: %q", status)
	}
	idle := time.Now()
	for {
		if _, err := br.ReadString('\n'); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("an idle keep-alive HTTP connection is still open after 30 s")
			}
			t.Logf("idle HTTP connection closed by the proxy after %s", time.Since(idle).Round(10*time.Millisecond))
			break
		}
	}

	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := revtunnel.Join(ctx, c.tunnel, "0123456789abcdef0123456789abcdef", revtunnel.JoinRequest{PublicKey: "x"}, revtunnel.Trust{Pin: c.pin})
		cancel()
		if err == nil {
			t.Fatal("a wrong join token joined")
		}
	}
	// The address that sent them is held back for a while, then joins
	// with a right token again (other addresses never were: see
	// transport/revtunnel's tests).
	waitFor(t, "a right token to join again after the flood", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		key, _, _ := pki.GenerateKey()
		_, _, err := revtunnel.Join(ctx, c.tunnel, c.token, revtunnel.JoinRequest{Name: "after", PublicKey: string(ssh.MarshalAuthorizedKey(key.PublicKey()))}, revtunnel.Trust{Pin: c.pin})
		return err == nil
	})

	yes, errs, code := runCmdInput(t, "", "sh", "-c", "ssh -F \"$1\" -o BatchMode=yes node1 yes | head -n 1", "sh", c.sshConfig)
	if yes != "y\n" {
		t.Errorf("ssh node1 yes | head -1: got %q code %d stderr %q", yes, code, errs)
	}
	c.sshOK(c.sshConfig, "node1", "true")

	for _, ev := range c.auditEvents() {
		if ev.Type == "session.login" && ev.AgentID == resp.AgentID {
			t.Fatalf("a login report for a session never dialed was audited: %+v", ev)
		}
		if len(ev.Resource) > 64 {
			t.Fatalf("an audit record holds a %d-byte resource name", len(ev.Resource))
		}
	}
	logs := c.proxy.stderr.String()
	for _, l := range strings.Split(logs, "\n") {
		if len(l) > 4096 {
			t.Fatalf("the proxy logged a %d-byte line: %.200q", len(l), l)
		}
	}
	if n := strings.Count(logs, "join refused: unknown token"); n > 5 {
		t.Errorf("100 wrong join tokens made %d log lines, want them sampled", n)
	}
}

// TestCatalogSurvivesKill9 replays finding 6: what a proxy listed before
// kill -9 it lists after its restart, before any agent returns.
func TestCatalogSurvivesKill9(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	ag := c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })
	ag.cmd.Process.Kill()
	<-ag.done
	ag.done <- nil
	waitFor(t, "node1 listed offline", func() bool {
		out, _, _ := sshRun(t, c.sshConfig, "proxy-1", "ls")
		return strings.Contains(out, "offline")
	})
	c.proxy.cmd.Process.Kill() // SIGKILL: no shutdown, no last write
	<-c.proxy.done
	c.proxy.done <- nil
	c.proxy = start(t, "proxy", "--config", c.proxyCfg)
	waitFor(t, "the proxy back", func() bool { _, _, code := sshRun(t, c.sshConfig, "proxy-1", "ls"); return code == 0 })
	out := c.sshOK(c.sshConfig, "proxy-1", "ls")
	if !regexpLine(out, `node1\s+ssh\s+offline\s+0/1`) {
		t.Fatalf("ls after kill -9 and restart:\n%s\nwant node1 listed offline 0/1", out)
	}
	_, errs, _ := sshRun(t, c.sshConfig, "node1", "true")
	if !strings.Contains(errs, `resource "node1" is offline`) {
		t.Fatalf("a session to node1 after the restart: stderr %q, want it offline, not unknown", errs)
	}
}

// TestDamagedAuditLogNeverCrashes replays finding 6 on a real proxy's
// audit.db: a zeroed page and a file cut in half are each a clear refusal
// at start, never a panic; a log replaced by an empty one is served on and
// reported in the new log.
func TestDamagedAuditLogNeverCrashes(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })
	for range 20 {
		c.sshOK(c.sshConfig, "node1", "true")
	}
	c.proxy.stop(t)
	path := filepath.Join(c.dir, "proxy-1", "audit.db")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, damage := range []struct {
		name string
		data []byte
	}{
		{"zeroed pages", zeroPages(good, 2)},
		{"cut short", good[:3*4096]}, // the meta pages and one more: the pages in use reach further
	} {
		if err := os.WriteFile(path, damage.data, 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, "proxy", "--config", c.proxyCfg)
		var code int
		select {
		case err := <-p.done:
			p.done <- err
			code = p.cmd.ProcessState.ExitCode()
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: the proxy did not refuse to start; stderr:\n%s", damage.name, p.stderr.String())
		}
		errs := p.stderr.String()
		if code != 1 || strings.Contains(errs, "panic") || strings.Contains(errs, "goroutine ") || !strings.Contains(errs, "audit") {
			t.Fatalf("%s: exit %d, stderr:\n%s\nwant a one-line refusal naming the audit log", damage.name, code, errs)
		}
		t.Logf("%s: %s", damage.name, strings.TrimSpace(errs[strings.LastIndex(strings.TrimSpace(errs), "\n")+1:]))
	}
	// An empty file in its place: the proxy serves and says so.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c.proxy = start(t, "proxy", "--config", c.proxyCfg)
	waitFor(t, "the proxy back", func() bool { _, _, code := sshRun(t, c.sshConfig, "proxy-1", "ls"); return code == 0 })
	replaced := false
	for _, ev := range c.auditEvents() {
		replaced = replaced || ev.Type == "audit.replaced"
	}
	if !replaced {
		t.Fatalf("no audit.replaced record after the log was emptied; proxy stderr:\n%s", c.proxy.stderr.String())
	}
}

// zeroPages returns data with every 4 KiB page from page `from` on zeroed:
// whatever holds the events, it is gone (one zeroed page may be a free one,
// which is no damage).
func zeroPages(data []byte, from int) []byte {
	out := slices.Clone(data)
	clear(out[min(len(out), from*4096):])
	return out
}

// TestRefusedLoginIsAuditedAsRefused: a login the certificate does not
// hold is refused by the node with the logins the user may use, and the
// audit log records the session as refused (with the session's user and
// resource on the login record), not as a session that ran.
func TestRefusedLoginIsAuditedAsRefused(t *testing.T) {
	t.Parallel()
	c := newTrustCluster(t)
	c.agent("agent-1", c.token, "  - {name: node1, kind: ssh}\n")
	waitFor(t, "node1 reachable", func() bool { out, _, _ := sshRun(t, c.sshConfig, "node1", "echo up"); return out == "up\n" })
	wrong := "ubuntu"
	if c.me == wrong {
		wrong = "daemon"
	}
	_, errs, code := sshRun(t, c.sshConfig, wrong+"@node1", "true")
	want := fmt.Sprintf("your certificate does not allow login %q; its logins: %s", wrong, c.me)
	if code != 255 || !strings.Contains(errs, want) {
		t.Fatalf("ssh %s@node1: code %d stderr %q, want %q", wrong, code, errs, want)
	}
	c.sshOK(c.sshConfig, "node1", "true")
	var login, end *audit.Event
	waitFor(t, "the refused session's records", func() bool {
		login, end = nil, nil
		for _, ev := range c.auditEvents() {
			if ev.Login != wrong {
				continue
			}
			switch ev.Type {
			case "session.login":
				login = &ev
			case "session.end":
				end = &ev
			}
		}
		return login != nil && end != nil
	})
	if login.Outcome != "refused" || login.User != "alice" || login.Resource != "node1" || !strings.Contains(login.Error, "not a principal") {
		t.Errorf("session.login record: %+v, want refused for alice on node1 with the node's reason", *login)
	}
	if end.Outcome != "refused" || end.SessionID != login.SessionID {
		t.Errorf("session.end record: %+v, want outcome refused", *end)
	}
}
