// Package clustertest starts Warren clusters inside a test: real proxies
// and agents on 127.0.0.1 with free ports, real Pebble and bbolt files in
// t.TempDir(), a user with a certificate and an ssh_config that the stock
// OpenSSH binaries use as they are. Everything is stopped in t.Cleanup.
package clustertest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/cluster/access"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/sshconfig"
	"github.com/warren-proxy/warren/transport/pki"
)

// Cluster is a running test cluster. Its files are a harness.Cluster's:
// the same configs a proxy process or `warren dev` would read.
type Cluster struct {
	t   testing.TB
	Dir string
	H   *harness.Cluster
	// Auth is the cluster identity (H.Auth).
	Auth *pki.Authority
	// Proxy is the first proxy when proxies run in this process (nil when
	// they are processes); Proxies holds all, proxy-1 … proxy-N on
	// 127.0.0.1 … 127.0.0.N.
	Proxy   *proxy.Proxy
	Proxies []*Proxy
	Agents  map[string]*agent.Agent
	// SSHConfig is an ssh_config with Host proxy-1 and every resource.
	SSHConfig string
	// Identity is the user's private key; its certificate is beside it.
	Identity string
	User     string
	Login    string
	Logger   *slog.Logger

	user      *harness.User
	hosts     []string
	opts      Options
	runner    Runner
	proxyLogs []string // log files of every proxy process started
	next      int      // round-robin over proxies for agents
	// joinToken is the token agents join with by default: a grant for
	// every name ("*"), so that several agents may serve one name (the
	// pools these tests exercise). Tests of grants make their own.
	joinToken string
}

// Runner says where a cluster's proxies run.
type Runner int

const (
	// RunDefault runs one proxy in this process and several as processes.
	RunDefault Runner = iota
	// RunInProcess runs every proxy in this process, for tests and
	// benchmarks that reach into a proxy. With -race it takes one proxy
	// only: protoactor's remote.Start writes gRPC's global logger, which
	// the gRPC connections of the other proxies in the process read.
	RunInProcess
	// RunProcesses runs every proxy as a process of its own: this test
	// binary, run again as a proxy (Main), so built with -race when the
	// tests are. Tests that add proxies later start with it.
	RunProcesses
)

// Options tune New.
type Options struct {
	// Agents maps an agent name to its resources.
	Agents map[string][]agent.ResourceConfig
	// Proxies is the number of proxies (default 1).
	Proxies int
	// Runner says where proxies run.
	Runner Runner
	// ProxyYAML is appended to every proxy's config file.
	ProxyYAML string
	// ShutdownGrace is every proxy's shutdown.grace (2s unless set): a
	// stopped proxy's harness kills it after 10 s.
	ShutdownGrace time.Duration
	// Proxy adjusts each in-process proxy's config before start.
	Proxy func(*proxy.Config)
	// Agent adjusts each agent's config before start.
	Agent func(name string, c *agent.Config)
	// Region names proxy-i's region (default: every proxy in "local").
	Region func(i int) string
}

// New starts the proxies and the agents in opts and waits until every
// resource is routed.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{t: t, Dir: dir, Agents: map[string]*agent.Agent{}, Logger: testLogger(t), opts: opts}
	var err error
	if c.H, err = harness.New(dir, "test"); err != nil {
		t.Fatal(err)
	}
	c.Auth = c.H.Auth
	c.H.ProxyExtra = opts.ProxyYAML
	c.H.ShutdownGrace = cmp.Or(opts.ShutdownGrace, 2*time.Second)
	n := max(opts.Proxies, 1)
	switch c.runner = opts.Runner; {
	case c.runner == RunDefault && n == 1:
		c.runner = RunInProcess
	case c.runner == RunDefault:
		c.runner = RunProcesses
	case c.runner == RunInProcess && n > 1 && raceEnabled:
		t.Skip("several proxies in one process race inside protoactor remote.Start; run without -race, or as processes (RunProcesses)")
	}
	if c.runner == RunProcesses && opts.Proxy != nil {
		t.Fatal("clustertest: Options.Proxy adjusts in-process proxies; give proxy processes ProxyYAML")
	}
	c.Login = currentUser(t)
	c.User = "alice"
	if c.user, err = c.H.IssueUser(c.User, []string{c.Login}, []string{"admin"}, time.Hour, dir); err != nil {
		t.Fatal(err)
	}
	c.Identity = c.user.Key
	for i := 1; i <= n; i++ {
		c.AddProxy(i)
	}
	c.WaitMembers(n)
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

// Proxy is one proxy of a test cluster: in this process (In) or a process
// of its own (H.Proc).
type Proxy struct {
	H       *harness.Proxy
	In      *proxy.Proxy
	c       *Cluster
	stopped bool // its process was stopped and checked
}

func (p *Proxy) ID() string { return p.H.ID }

// UserAddr, TunnelAddr and GossipAddr are where the proxy listens.
func (p *Proxy) UserAddr() string   { return p.addr(p.H.User, (*proxy.Proxy).UserAddr) }
func (p *Proxy) TunnelAddr() string { return p.addr(p.H.Tunnel, (*proxy.Proxy).TunnelAddr) }
func (p *Proxy) GossipAddr() string { return p.addr(p.H.Gossip, (*proxy.Proxy).GossipAddr) }

func (p *Proxy) addr(configured string, bound func(*proxy.Proxy) string) string {
	if p.In != nil {
		return bound(p.In)
	}
	return configured
}

// Members is how many proxies this one sees (-1: it does not answer).
func (p *Proxy) Members() int {
	if p.In != nil {
		return len(p.In.Members())
	}
	st, err := p.c.H.Status(p.H)
	if err != nil {
		return -1
	}
	return len(st)
}

// Routable reports whether the proxy has a usable route to resource.
func (p *Proxy) Routable(resource string) bool {
	if p.In != nil {
		for _, e := range p.In.Table().Snapshot().Lookup(resource) {
			if e.Usable() {
				return true
			}
		}
		return false
	}
	return p.c.H.Healthy(p.H, resource) > 0
}

// AddProxy starts proxy number i (1-based), proxy-i on 127.0.0.i, zone-i
// of region local (or Options.Region's), joining through the proxies
// that are up; a proxy of that number that ran before starts again on its
// data, on new ports.
func (c *Cluster) AddProxy(i int) *Proxy {
	c.t.Helper()
	region := "local"
	if c.opts.Region != nil {
		region = c.opts.Region(i)
	}
	h := c.H.NewProxy(i, fmt.Sprintf("127.0.0.%d", i), region, fmt.Sprintf("zone-%d", i))
	for _, q := range c.Proxies {
		if q.Members() > 0 {
			h.Seeds = append(h.Seeds, q.GossipAddr())
		}
	}
	p := &Proxy{H: h, c: c}
	if c.runner == RunProcesses {
		c.startProcess(p)
	} else {
		if err := c.H.WriteConfig(h); err != nil {
			c.t.Fatal(err)
		}
		cfg, err := proxy.LoadConfig(h.Config)
		if err != nil {
			c.t.Fatal(err)
		}
		cfg.Logger = c.Logger.With("proxy", h.ID)
		if c.opts.Proxy != nil {
			c.opts.Proxy(&cfg)
		}
		p.In = c.StartProxy(cfg)
	}
	c.put(p)
	return p
}

// put adds p to c.Proxies, in place of a proxy with its id.
func (c *Cluster) put(p *Proxy) {
	if i := slices.IndexFunc(c.Proxies, func(q *Proxy) bool { return q.ID() == p.ID() }); i >= 0 {
		c.Proxies[i] = p
	} else {
		c.Proxies = append(c.Proxies, p)
	}
	c.Proxy = c.Proxies[0].In
}

// childEnv names the config file of a test binary run as a proxy (Main).
const childEnv = "WARREN_CLUSTERTEST_PROXY_CONFIG"

// startProcess runs p as this test binary in proxy mode and, at cleanup,
// stops it and fails the test if it did not end cleanly (a data race
// under -race ends it with status 66).
func (c *Cluster) startProcess(p *Proxy) {
	c.t.Helper()
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	err = c.H.StartProxy(c.t.Context(), p.H, func(config string) harness.Command {
		return harness.Command{Bin: self, Args: []string{"-test.run=^$"}, Env: []string{childEnv + "=" + config}}
	})
	if proc := p.H.Proc; proc != nil {
		c.proxyLogs = append(c.proxyLogs, proc.Log)
		c.t.Cleanup(func() { c.stopProcess(p) })
	}
	if err == nil {
		err = c.H.WaitReady(c.t.Context(), p.H)
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// stopProcess stops p's process and reports an unclean end.
func (c *Cluster) stopProcess(p *Proxy) {
	if p.stopped {
		return
	}
	p.stopped = true
	proc := p.H.Proc
	proc.Stop()
	if err := proc.Err(); err != nil {
		log, _ := os.ReadFile(proc.Log)
		if i := bytes.Index(log, []byte("WARNING: DATA RACE")); i >= 0 {
			log = log[i:]
		} else if len(log) > 4000 {
			log = log[len(log)-4000:]
		}
		c.t.Errorf("proxy process %s ended with %v; its log (%s):\n%s", p.ID(), err, proc.Log, log)
	}
}

// StopProxy stops proxy id, drops it from c.Proxies, waits until the
// others see it gone and rewrites the ssh_config.
func (c *Cluster) StopProxy(id string) {
	c.t.Helper()
	i := slices.IndexFunc(c.Proxies, func(p *Proxy) bool { return p.ID() == id })
	if i < 0 {
		c.t.Fatalf("no proxy %s to stop", id)
	}
	p := c.Proxies[i]
	if p.In != nil {
		p.In.Close()
	} else {
		c.stopProcess(p)
	}
	c.Proxies = slices.Delete(c.Proxies, i, i+1)
	c.Proxy = c.Proxies[0].In
	c.WaitMembers(len(c.Proxies))
	c.WriteSSHConfig()
}

// KillProxy kills proxy id's process with SIGKILL (no drain, no goodbye),
// drops it from c.Proxies, waits until the others see it gone and
// rewrites the ssh_config.
func (c *Cluster) KillProxy(id string) {
	c.t.Helper()
	i := slices.IndexFunc(c.Proxies, func(p *Proxy) bool { return p.ID() == id })
	if i < 0 || c.Proxies[i].H.Proc == nil {
		c.t.Fatalf("no proxy process %s to kill", id)
	}
	p := c.Proxies[i]
	p.stopped = true
	p.H.Proc.Kill()
	c.Proxies = slices.Delete(c.Proxies, i, i+1)
	c.Proxy = c.Proxies[0].In
	c.WaitMembers(len(c.Proxies))
	c.WriteSSHConfig()
}

// ProxyLogValues returns the values of field in the proxies' JSON log
// records whose message is msg, in log order per proxy.
func (c *Cluster) ProxyLogValues(msg, field string) []string {
	var out []string
	for _, path := range c.proxyLogs {
		b, err := os.ReadFile(path)
		if err != nil {
			c.t.Fatal(err)
		}
		for line := range bytes.Lines(b) {
			var rec map[string]any
			if json.Unmarshal(line, &rec) != nil || rec["msg"] != msg {
				continue
			}
			if v, ok := rec[field].(string); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// ProxyLogCount counts the records of every proxy process's logs so far
// with message msg, or with msg and reason when key is "msg: reason".
func (c *Cluster) ProxyLogCount(key string) int {
	n := 0
	for _, path := range c.proxyLogs {
		b, err := os.ReadFile(path)
		if err != nil {
			c.t.Fatal(err)
		}
		for line := range bytes.Lines(b) {
			var rec struct{ Msg, Reason string }
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			if rec.Msg == key || rec.Msg+": "+rec.Reason == key {
				n++
			}
		}
	}
	return n
}

// Main is the TestMain of a package that starts clusters. When the
// harness started the test binary as a proxy process it runs that proxy
// until SIGTERM; otherwise it runs the tests and then fails the binary
// if any goroutine is still alive after every test and its cleanups
// (goleak). It waits up to 5 s for goroutines that end on their own
// (protoactor's dead-letter throttle ends a second after its last dead
// letter).
func Main(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChild(path))
	}
	code := m.Run()
	if code == 0 {
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = goleak.Find(); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests and their cleanups: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runChild is a proxy process: the config at path, JSON logs on stderr
// (the harness's log file, which ProxyLogCount reads), until SIGTERM.
func runChild(path string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := proxy.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := proxy.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// StartProxy starts (or restarts) an in-process proxy with cfg.
func (c *Cluster) StartProxy(cfg proxy.Config) *proxy.Proxy {
	c.t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { p.Close() })
	for _, q := range c.Proxies {
		if q.ID() == p.ID() {
			q.In = p
		}
	}
	if len(c.Proxies) > 0 {
		c.Proxy = c.Proxies[0].In
	}
	return p
}

// WaitMembers waits until every proxy sees n live members.
func (c *Cluster) WaitMembers(n int) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("%d proxies in every membership", n), func() bool {
		for _, p := range c.Proxies {
			if p.Members() != n {
				return false
			}
		}
		return true
	})
}

// Token makes a join token with req's grant through the first proxy.
func (c *Cluster) Token(req access.TokenRequest) string {
	c.t.Helper()
	if c.Proxy != nil {
		secret, _, err := c.Proxy.CreateToken(req, "clustertest")
		if err != nil {
			c.t.Fatalf("create join token: %v", err)
		}
		return secret
	}
	// A proxy process: `token add` over SSH, as an administrator would.
	if req.Uses != 0 || req.Labels != nil || req.RenewFor != 0 {
		c.t.Fatal("clustertest: Token through a proxy process takes a TTL and resources only")
	}
	client, err := ssh.Dial("tcp", c.Proxies[0].UserAddr(), &ssh.ClientConfig{
		User:            c.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(c.user.Signer)},
		HostKeyCallback: pki.HostKeyCallback([]ssh.PublicKey{c.Auth.HostCA.PublicKey()}, nil, nil),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		c.t.Fatalf("create join token: %v", err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		c.t.Fatalf("create join token: %v", err)
	}
	defer sess.Close()
	out, err := sess.Output(fmt.Sprintf("token add --ttl %s --resources %s", req.TTL, strings.Join(req.Resources, ",")))
	if err != nil {
		c.t.Fatalf("create join token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// AgentConfig returns the config StartAgent uses for an agent: the file
// the harness writes, loaded as `warren agent` loads it, with the test's
// logger and opts.Agent's changes.
func (c *Cluster) AgentConfig(name string, res []agent.ResourceConfig) agent.Config {
	c.t.Helper()
	if c.joinToken == "" {
		c.joinToken = c.Token(access.TokenRequest{TTL: time.Hour, Resources: []string{"*"}})
	}
	first := c.Proxies[c.next%len(c.Proxies)]
	c.next++
	a := &harness.Agent{Name: name, Proxies: []string{first.TunnelAddr()}, Token: c.joinToken}
	if len(res) > 0 {
		extra, err := yaml.Marshal(struct {
			Resources []agent.ResourceConfig `yaml:"resources"`
		}{res})
		if err != nil {
			c.t.Fatal(err)
		}
		a.Extra = string(extra)
	}
	if err := c.H.WriteAgentConfig(a); err != nil {
		c.t.Fatal(err)
	}
	cfg, err := agent.LoadConfig(a.Config)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg.Logger = c.Logger.With("agent", name)
	if c.opts.Agent != nil {
		c.opts.Agent(name, &cfg)
	}
	return cfg
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
	u, err := c.H.IssueUser(name, logins, roles, ttl, dir)
	if err != nil {
		c.t.Fatal(err)
	}
	return u.Key, u.Certificate
}

// WriteSSHConfig (re)writes c.SSHConfig for the current proxy addresses.
func (c *Cluster) WriteSSHConfig() {
	c.t.Helper()
	var buf bytes.Buffer
	hosts := append([]string{"unknown-resource"}, c.hosts...)
	var proxies []sshconfig.Proxy
	for _, p := range c.Proxies {
		proxies = append(proxies, sshconfig.Proxy{Name: p.ID(), Addr: p.UserAddr()})
	}
	err := sshconfig.Write(&buf, sshconfig.Config{
		Proxies:            proxies,
		User:               c.User,
		Login:              c.Login,
		Identity:           c.Identity,
		KnownHosts:         c.user.KnownHosts,
		ResourceKnownHosts: c.user.ResourceKnownHosts,
		Hosts:              hosts,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	// Tests must never hang on a prompt or reuse a connection.
	buf.WriteString("\nHost *\n    BatchMode yes\n    ConnectTimeout 10\n    ServerAliveInterval 5\n    ControlMaster no\n")
	// Replaced in one step: ssh clients of a test may be reading it. Its
	// path is set once: sessions running in the background read it.
	if path := filepath.Join(c.Dir, "ssh_config"); c.SSHConfig != path {
		c.SSHConfig = path
	}
	if err := os.WriteFile(c.SSHConfig+".new", buf.Bytes(), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(c.SSHConfig+".new", c.SSHConfig); err != nil {
		c.t.Fatal(err)
	}
}

// WaitRoutable waits until every proxy has a usable route to resource.
func (c *Cluster) WaitRoutable(resource string) {
	c.t.Helper()
	c.WaitFor(resource+" routable on every proxy", func() bool {
		for _, p := range c.Proxies {
			if !p.Routable(resource) {
				return false
			}
		}
		return true
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
