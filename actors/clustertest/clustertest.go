// Package clustertest starts Warren clusters inside a test: real proxies
// and agents on 127.0.0.1 with free ports, real Pebble and bbolt files in
// t.TempDir(), a user with a certificate and an ssh_config that the stock
// OpenSSH binaries use as they are. Everything is stopped in t.Cleanup.
package clustertest

import (
	"bytes"
	"context"

	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/internal/sshconfig"
	"github.com/warren-proxy/warren/transport/pki"
)

// live counts the clusters not yet cleaned up.
var live atomic.Int32

// Cluster is a running test cluster.
type Cluster struct {
	t      testing.TB
	Dir    string
	Auth   *pki.Authority
	Proxy  *proxy.Proxy
	Agents map[string]*agent.Agent
	// SSHConfig is an ssh_config with Host proxy-1 and every resource.
	SSHConfig string
	// Identity is the user's private key; its certificate is beside it.
	Identity string
	User     string
	Login    string
	Logger   *slog.Logger

	mu    sync.Mutex
	hosts []string
}

// Options tune New.
type Options struct {
	// Agents maps an agent name to its resources.
	Agents map[string][]agent.ResourceConfig
	// Proxy adjusts the proxy config before start.
	Proxy func(*proxy.Config)
}

// New starts a proxy and the agents in opts and waits until every
// resource is routed.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	// Registered first, so it runs after every other cleanup of this
	// cluster; the check waits until no cluster of this process is left.
	live.Add(1)
	t.Cleanup(func() {
		if live.Add(-1) == 0 {
			CheckNoLeaks(t)
		}
	})
	dir := t.TempDir()
	c := &Cluster{t: t, Dir: dir, Agents: map[string]*agent.Agent{}, Logger: testLogger(t)}
	var err error
	c.Auth, err = pki.Init(filepath.Join(dir, "auth"), pki.InitOptions{ClusterName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pcfg := proxy.Config{
		ID:      "proxy-1",
		Region:  "local",
		DataDir: filepath.Join(dir, "proxy-1"),
		AuthDir: filepath.Join(dir, "auth"),
		Listen:  proxy.Listen{User: "127.0.0.1:0", Tunnel: "127.0.0.1:0", HTTP: "127.0.0.1:0"},
		Logger:  c.Logger.With("proxy", "proxy-1"),
	}
	if opts.Proxy != nil {
		opts.Proxy(&pcfg)
	}
	c.StartProxy(pcfg)

	c.Login = currentUser(t)
	c.User = "alice"
	c.Identity, _ = c.IssueUser(c.User, []string{c.Login}, []string{"admin"}, time.Hour, dir)
	for name, res := range opts.Agents {
		c.StartAgent(name, res)
		for _, r := range res {
			c.hosts = append(c.hosts, r.Name)
		}
	}
	c.WriteSSHConfig()
	for _, h := range c.hosts {
		c.WaitRoutable(h)
	}
	return c
}

// StartProxy starts (or restarts) the proxy with cfg.
func (c *Cluster) StartProxy(cfg proxy.Config) {
	c.t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.Proxy = p
	c.t.Cleanup(func() { p.Close() })
}

// AgentConfig returns the config StartAgent uses for an agent.
func (c *Cluster) AgentConfig(name string, res []agent.ResourceConfig) agent.Config {
	toks, err := c.Auth.JoinTokens()
	if err != nil || len(toks) == 0 {
		c.t.Fatalf("join tokens: %v", err)
	}
	return agent.Config{
		Name:              name,
		DataDir:           filepath.Join(c.Dir, name),
		Proxies:           []string{c.Proxy.TunnelAddr()},
		JoinToken:         toks[0],
		CAPin:             pki.Fingerprint(c.Auth.HostCA.PublicKey()),
		Resources:         res,
		HeartbeatInterval: time.Second,
		HealthInterval:    time.Second,
		ReconnectMin:      50 * time.Millisecond,
		ReconnectMax:      time.Second,
		Logger:            c.Logger.With("agent", name),
	}
}

// StartAgent starts an in-process agent.
func (c *Cluster) StartAgent(name string, res []agent.ResourceConfig) *agent.Agent {
	c.t.Helper()
	a, err := agent.New(c.AgentConfig(name, res))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.Agents[name] = a
	c.t.Cleanup(func() { a.Close() })
	return a
}

// IssueUser writes a key and certificate for a user into dir.
func (c *Cluster) IssueUser(name string, logins, roles []string, ttl time.Duration, dir string) (key string, cert *ssh.Certificate) {
	c.t.Helper()
	signer, keyPEM, err := pki.GenerateKey()
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err = c.Auth.IssueUserCert(signer.PublicKey(), pki.UserCertRequest{User: name, Logins: logins, Roles: roles, TTL: ttl, Now: time.Now()})
	if err != nil {
		c.t.Fatal(err)
	}
	key, err = pki.WriteUserFiles(dir, name, keyPEM, cert)
	if err != nil {
		c.t.Fatal(err)
	}
	kh := pki.KnownHostsLine(c.Auth.HostCA.PublicKey(), "*") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(kh), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return key, cert
}

// WriteSSHConfig (re)writes c.SSHConfig for the current proxy address.
func (c *Cluster) WriteSSHConfig() {
	c.t.Helper()
	var buf bytes.Buffer
	hosts := append([]string{"unknown-resource"}, c.hosts...)
	err := sshconfig.Write(&buf, sshconfig.Config{
		Proxies:    []sshconfig.Proxy{{Name: "proxy-1", Addr: c.Proxy.UserAddr()}},
		User:       c.User,
		Login:      c.Login,
		Identity:   c.Identity,
		KnownHosts: filepath.Join(filepath.Dir(c.Identity), "known_hosts"),
		Hosts:      hosts,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	// Tests must never hang on a prompt or reuse a connection.
	buf.WriteString("\nHost *\n    BatchMode yes\n    ConnectTimeout 10\n    ServerAliveInterval 5\n    ControlMaster no\n")
	c.SSHConfig = filepath.Join(c.Dir, "ssh_config")
	if err := os.WriteFile(c.SSHConfig, buf.Bytes(), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// WaitRoutable waits until the proxy has a usable route to resource.
func (c *Cluster) WaitRoutable(resource string) {
	c.t.Helper()
	c.WaitFor(resource+" routable", func() bool {
		for _, e := range c.Proxy.Table().Snapshot().Lookup(resource) {
			if e.Usable() {
				return true
			}
		}
		return false
	})
}

// WaitFor polls cond until it holds or 20 s pass.
func (c *Cluster) WaitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Result is what an OpenSSH command did.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs an OpenSSH binary (ssh, scp, sftp, rsync, …) with the
// cluster's ssh_config, feeding stdin, bounded by a timeout.
func (c *Cluster) Run(stdin io.Reader, name string, args ...string) Result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	switch name {
	case "ssh", "scp", "sftp":
		args = append([]string{"-F", c.SSHConfig}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.Code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return res
}

// SSHArgs returns `ssh -F cfg` as a string for rsync -e.
func (c *Cluster) SSHArgs() string { return "ssh -F " + c.SSHConfig }

// ProxyHostPort splits the proxy's user address.
func (c *Cluster) ProxyHostPort() (string, string) {
	h, p, _ := net.SplitHostPort(c.Proxy.UserAddr())
	return h, p
}

func currentUser(t testing.TB) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// testLogger logs to t.Log when -v, otherwise discards.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// CheckNoLeaks fails t if goroutines running Warren's code are still alive
// a few seconds after everything was closed.
func CheckNoLeaks(t testing.TB) {
	t.Helper()
	var leaked []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaked = leaked[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/warren-proxy/warren/") &&
				!strings.Contains(g, "_test.go:") && // the test's own helpers
				!strings.Contains(g, "clustertest.CheckNoLeaks") &&
				!strings.Contains(g, "testing.tRunner") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(leaked) > 0 {
		t.Errorf("%d goroutines left behind after the cluster closed:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}
