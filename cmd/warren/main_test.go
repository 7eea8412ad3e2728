package main

import (
	"bufio"
	"bytes"
	"fmt"

	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/harness"
)

// These tests run the real warren binary as separate processes.

var warrenBin string

func TestMain(m *testing.M) {
	bin, err := harness.BuildWarren(raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	warrenBin = bin
	code := m.Run()
	os.RemoveAll(filepath.Dir(bin))
	os.Exit(code)
}

// proc is a warren process started by a test and stopped in its cleanup.
type proc struct {
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan error
}

type lockedBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newBuf() *lockedBuffer { return &lockedBuffer{mu: make(chan struct{}, 1)} }

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(warrenBin, args...), stdout: newBuf(), stderr: newBuf(), done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("warren %s stderr:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("warren exited with %v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("warren did not stop within 30s of SIGTERM")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runWarren(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCmd(t, warrenBin, args...)
}

func sshRun(t *testing.T, config string, args ...string) (string, string, int) {
	t.Helper()
	return runCmd(t, "ssh", append([]string{"-F", config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"}, args...)...)
}

// runCmd runs a command for at most a minute and returns its output and
// exit code.
func runCmd(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	return runCmdInput(t, "", name, args...)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDev runs README's command: `warren dev` brings a cluster up, and its
// ssh_config works with stock OpenSSH.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	p := start(t, "dev", "--dir", dir, "--user-port", "0", "--tunnel-port", "0", "--http-port", "0")
	waitFor(t, "dev cluster up", func() bool { return strings.Contains(p.stdout.String(), "is up") })
	cfg := filepath.Join(dir, "ssh_config")
	if !strings.Contains(p.stdout.String(), "ssh -F "+cfg+" node1") {
		t.Errorf("dev output does not show the ssh line:\n%s", p.stdout.String())
	}
	if out, errs, code := sshRun(t, cfg, "node1", "echo hi"); out != "hi\n" || code != 0 {
		t.Fatalf("ssh node1 'echo hi': got %q code %d stderr %q", out, code, errs)
	}
	if _, _, code := sshRun(t, cfg, "node1", "exit 7"); code != 7 {
		t.Fatalf("ssh node1 'exit 7': got code %d, want 7", code)
	}
	p.stop(t)
}

// writeCluster makes a cluster with the CLI (`warren init`, `warren user
// add`) and writes, with internal/harness, the configs of one proxy and
// one agent serving node1, and an ssh_config for both.
func writeCluster(t *testing.T) (dir, proxyCfg, agentCfg, userAddr string) {
	t.Helper()
	h, p, a := writeHarness(t)
	return h.Dir, p.Config, a.Config, p.User
}

// writeHarness is writeCluster, returning the harness's view of the files.
func writeHarness(t *testing.T) (*harness.Cluster, *harness.Proxy, *harness.Agent) {
	t.Helper()
	dir := t.TempDir()
	auth := filepath.Join(dir, "auth")
	out, errs, code := runWarren(t, "init", "--data-dir", auth)
	if code != 0 {
		t.Fatalf("init: code %d stderr %q", code, errs)
	}
	h, err := harness.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "ca_pin): "+h.Pin) {
		t.Fatalf("init printed no CA pin %s:\n%s", h.Pin, out)
	}
	toks, err := os.ReadFile(filepath.Join(auth, "join_tokens"))
	if err != nil {
		t.Fatal(err)
	}
	token := ""
	sc := bufio.NewScanner(bytes.NewReader(toks))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			token = l
			break
		}
	}
	p := h.NewProxy(1, "127.0.0.1", "local", "zone-1")
	p.User, p.Tunnel, p.HTTP, p.Gossip, p.Peer, p.Far = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	p.Extra = "tunnel: {keepalive_interval: 1s}"
	if err := h.WriteConfig(p); err != nil {
		t.Fatal(err)
	}
	a := &harness.Agent{Name: "agent-1", Proxies: []string{p.Tunnel}, Token: token,
		Extra: "resources:\n  - name: node1\n    kind: ssh\n"}
	if err := h.WriteAgentConfig(a); err != nil {
		t.Fatal(err)
	}
	me := currentLogin(t)
	if _, errs, code := runWarren(t, "user", "add", "alice", "--logins", me, "--roles", "admin", "--data-dir", auth, "--out", dir); code != 0 {
		t.Fatalf("user add: code %d stderr %q", code, errs)
	}
	host, port, _ := net.SplitHostPort(p.User)
	os.WriteFile(filepath.Join(dir, "ssh_config"), []byte(fmt.Sprintf(`Host proxy-1
    HostName %s
    Port %s
    User alice
    IdentityFile %[3]s/alice
    CertificateFile %[3]s/alice-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile %[3]s/known_hosts
    StrictHostKeyChecking yes
Host node1
    ProxyJump proxy-1
    User %[4]s
    IdentityFile %[3]s/alice
    CertificateFile %[3]s/alice-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile %[3]s/known_hosts_resources
    StrictHostKeyChecking yes
`, host, port, dir, me)), 0o644)
	return h, p, a
}

// TestAgentKilled: SIGKILL an agent process; the proxy drops its routes
// when the tunnel closes and refuses new sessions with a clear message;
// the restarted agent (no new join) is routed again; the proxy is never
// restarted.
func TestAgentKilled(t *testing.T) {
	dir, proxyCfg, agentCfg, _ := writeCluster(t)
	cfg := filepath.Join(dir, "ssh_config")
	start(t, "proxy", "--config", proxyCfg)
	agent := start(t, "agent", "--config", agentCfg)
	ok := func() bool { out, _, _ := sshRun(t, cfg, "node1", "echo up"); return out == "up\n" }
	waitFor(t, "node1 reachable", ok)

	agent.cmd.Process.Signal(syscall.SIGKILL)
	<-agent.done
	agent.done <- nil
	killed := time.Now()
	offline := func() bool {
		out, _, _ := sshRun(t, cfg, "proxy-1", "ls")
		return strings.Contains(out, "offline")
	}
	waitFor(t, "node1 listed offline", offline)
	t.Logf("routes dropped %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
	_, errs, code := sshRun(t, cfg, "node1", "true")
	if code == 0 || !strings.Contains(errs, `resource "node1" is offline`) {
		t.Fatalf("with the agent dead: got code %d stderr %q, want an offline refusal", code, errs)
	}

	again := start(t, "agent", "--config", agentCfg)
	waitFor(t, "node1 reachable again", ok)
	if strings.Contains(again.stderr.String(), "joined the cluster") {
		t.Errorf("the restarted agent joined again instead of using its stored identity")
	}
}

// TestMalformedConfig: a bad config file gets one clear error that names
// the field, and the process exits non-zero without serving.
func TestMalformedConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, cmd, yaml, want string
	}{
		{"unknown field", "proxy", "id: p\ndata_dir: /tmp/x\nauth_dir: /tmp/y\nlisten:\n  usr: 1.2.3.4:1\n", "usr"},
		{"wrong type", "proxy", "id: p\ndata_dir: /tmp/x\nauth_dir: /tmp/y\ntunnel:\n  keepalive_count: many\n", "keepalive_count"},
		{"bad duration", "agent", "data_dir: /tmp/x\nproxies: [a:1]\nheartbeat_interval: soon\nresources: [{name: n, kind: ssh}]\n", "heartbeat_interval"},
		{"missing id", "proxy", "data_dir: /tmp/x\nauth_dir: /tmp/y\n", "id: required"},
		{"tcp without addr", "agent", "data_dir: /tmp/x\nproxies: [a:1]\nresources: [{name: db, kind: tcp}]\n", "resources[0].addr"},
		{"unknown kind", "agent", "data_dir: /tmp/x\nproxies: [a:1]\nresources: [{name: db, kind: udp}]\n", "resources[0].kind"},
		{"not yaml", "proxy", "id: [unclosed\n", "invalid YAML"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			os.WriteFile(path, []byte(tc.yaml), 0o644)
			_, errs, code := runWarren(t, tc.cmd, "--config", path)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Fatalf("got code %d stderr %q, want non-zero and a message naming %q", code, errs, tc.want)
			}
			if strings.Contains(errs, "goroutine ") || strings.Count(strings.TrimSpace(errs), "\n") > 2 {
				t.Fatalf("want one clear error, got:\n%s", errs)
			}
		})
	}
}

// TestClientCommands exercises warren ls, ssh, audit and config ssh.
func TestClientCommands(t *testing.T) {
	dir, proxyCfg, agentCfg, userAddr := writeCluster(t)
	start(t, "proxy", "--config", proxyCfg)
	start(t, "agent", "--config", agentCfg)
	env := []string{"WARREN_PROXY=" + userAddr, "WARREN_IDENTITY=" + filepath.Join(dir, "alice")}
	run := func(args ...string) (string, string, int) {
		cmd := exec.Command(warrenBin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), errb.String(), ee.ExitCode()
		}
		return out.String(), errb.String(), 0
	}
	waitFor(t, "node1 online", func() bool { out, _, _ := run("ls"); return strings.Contains(out, "online") })
	if out, errs, code := run("ssh", "node1", "echo", "hello"); out != "hello\n" || code != 0 {
		t.Fatalf("warren ssh: got %q code %d stderr %q", out, code, errs)
	}
	if _, _, code := run("ssh", "node1", "exit 4"); code != 4 {
		t.Fatalf("warren ssh exit 4: got code %d", code)
	}
	if out, errs, _ := run("audit", "--since", "1h"); !strings.Contains(out, "session.end") {
		t.Fatalf("warren audit: got %q stderr %q", out, errs)
	}
	out, errs, code := run("config", "ssh", "--proxy-name", "p1")
	if code != 0 || !strings.Contains(out, "Host node1") || !strings.Contains(out, "ProxyJump p1") {
		t.Fatalf("warren config ssh: got %q code %d stderr %q", out, code, errs)
	}
	cfgPath := filepath.Join(dir, "generated_ssh_config")
	os.WriteFile(cfgPath, []byte(out), 0o644)
	if out, errs, code := sshRun(t, cfgPath, "node1", "echo via config"); out != "via config\n" {
		t.Fatalf("ssh with `warren config ssh` output: got %q code %d stderr %q", out, code, errs)
	}
}

func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }

func TestFlagsFirst(t *testing.T) {
	fs := newFlags("x", "")
	fs.Bool("json", false, "")
	fs.String("message", "", "")
	for _, tt := range []struct{ in, want string }{
		{"user bob --message hi there --json", "--message hi --json -- user bob there"},
		{"--json rm ID", "--json -- rm ID"},
		{"a -- --json", "-- a --json"},
		{"--message=x y", "--message=x -- y"},
		{"", ""},
	} {
		if got := strings.Join(flagsFirst(fs, strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("flagsFirst(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
