package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/actors/agent"
	"github.com/warren-proxy/warren/actors/proxy"
	"github.com/warren-proxy/warren/internal/echo"
	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/sshconfig"
	"github.com/warren-proxy/warren/storage/identity"
	"github.com/warren-proxy/warren/transport/pki"
)

// runDev starts a whole local cluster in this process: a proxy, an agent
// serving this host over its embedded SSH server (node1), an agent
// forwarding to a small echo server (echo), and a user with a certificate
// and an ssh_config that stock OpenSSH uses as it is.
func runDev(ctx context.Context, args []string) error {
	fs := newFlags("dev", "[--dir DIR] [--proxies N] [--host IP] [--user-port N] [--tunnel-port N] [--http-port N] [--debug] [--log-format text|json]")
	dir := fs.String("dir", "warren-dev", "directory for the dev cluster's state")
	host := fs.String("host", "127.0.0.1", "address the proxy listens on")
	userPort := fs.Int("user-port", 3023, "proxy user SSH port (0 picks a free one)")
	tunnelPort := fs.Int("tunnel-port", 3024, "proxy tunnel port (0 picks a free one)")
	httpPort := fs.Int("http-port", 3080, "proxy HTTP port (0 picks a free one)")
	proxies := fs.Int("proxies", 1, "number of proxies (on 127.0.0.1, 127.0.0.2, …), in one gossip cluster")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	d, err := startDev(ctx, devConfig{
		Dir: *dir, Host: *host, UserPort: *userPort, TunnelPort: *tunnelPort, HTTPPort: *httpPort, Proxies: *proxies, Logger: log,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	self := selfCommand()
	fmt.Printf(`Warren dev cluster is up (state in %[1]s).

  ssh -F %[2]s node1            # a shell on this host through the proxy
  ssh -F %[2]s node1 'echo hi'
  ssh -F %[2]s proxy-1 ls       # list resources (also: status, whoami, audit --since 1h)
  echo hi | ssh -F %[2]s -W echo:7 proxy-1            # the tcp resource "echo" on stdin/stdout
  ssh -F %[2]s -N -L 17007:echo:7 proxy-1             # or as a local port: nc 127.0.0.1 17007
  export WARREN_PROXY=%[3]s WARREN_IDENTITY=%[4]s
  %[5]s ls; %[5]s ssh node1; %[5]s audit --since 1h
  curl http://%[6]s/healthz      # HTTP; /api/v1/ needs the bearer token in %[7]s

Press Ctrl-C to stop.
`, d.dir, d.sshConfig, d.proxy.UserAddr(), d.identity, self, d.proxy.HTTPAddr(), filepath.Join(d.dir, "auth", "api_token"))
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

type devConfig struct {
	Dir                            string
	Host                           string
	UserPort, TunnelPort, HTTPPort int
	Proxies                        int
	Logger                         *slog.Logger
}

type devCluster struct {
	dir, sshConfig, identity, user string
	proxy                          *proxy.Proxy // the first
	proxies                        []*proxy.Proxy
	agents                         []*agent.Agent
	echo                           net.Listener
	wg                             sync.WaitGroup
}

func startDev(ctx context.Context, c devConfig) (_ *devCluster, err error) {
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	d := &devCluster{dir: dir}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	authDir := filepath.Join(dir, "auth")
	auth, err := pki.Init(authDir, pki.InitOptions{ClusterName: "dev"})
	if errors.Is(err, pki.ErrIdentityExists) {
		auth, err = pki.Load(authDir)
		if errors.Is(err, pki.ErrNeedsUpgrade) {
			// A dev directory from an older Warren: upgrade it in place.
			if _, err = pki.Upgrade(authDir); err == nil {
				auth, err = pki.Load(authDir)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	// The dev cluster runs in this process from config files like any
	// other (internal/harness writes them), so an operator can read them
	// and run the same with `warren proxy --config` and `warren agent`.
	h, err := harness.OpenWith(dir, auth)
	if err != nil {
		return nil, err
	}
	hosts, err := devHosts(c.Host, c.Proxies)
	if err != nil {
		return nil, err
	}
	for i, host := range hosts {
		hp := h.NewProxy(i+1, host, "local", fmt.Sprintf("zone-%d", i+1))
		hp.User = net.JoinHostPort(host, fmt.Sprint(c.UserPort))
		hp.Tunnel = net.JoinHostPort(host, fmt.Sprint(c.TunnelPort))
		hp.HTTP = net.JoinHostPort(host, fmt.Sprint(c.HTTPPort))
		if i > 0 {
			hp.Seeds = []string{d.proxies[0].GossipAddr()}
		}
		if err := h.WriteConfig(hp); err != nil {
			return nil, err
		}
		pc, err := proxy.LoadConfig(hp.Config)
		if err != nil {
			return nil, err
		}
		pc.Logger = c.Logger // the proxy adds proxy=ID to its records
		p, err := proxy.New(pc)
		if err != nil {
			return nil, err
		}
		if err := p.Start(ctx); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%w; another warren dev may be running: stop it, or pass --user-port 0 --tunnel-port 0 --http-port 0 for free ports, or another --host such as 127.0.0.2", err)
			}
			return nil, err
		}
		d.proxies = append(d.proxies, p)
	}
	d.proxy = d.proxies[0]

	// The echo server behind the "echo" tcp resource.
	if d.echo, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		serveEcho(d.echo)
	}()

	toks, err := auth.JoinTokens()
	if err != nil || len(toks) == 0 {
		return nil, fmt.Errorf("dev cluster needs a join token in %s: %v", authDir, err)
	}
	agents := []struct{ name, resources string }{
		{"agent-1", "resources:\n  - {name: node1, kind: ssh, labels: {env: dev}}\n"},
		{"agent-2", fmt.Sprintf("resources:\n  - {name: echo, kind: tcp, addr: %q, labels: {env: dev}}\n", d.echo.Addr())},
	}
	for i, spec := range agents {
		// Peering mode: each agent keeps one tunnel; spread them.
		ha := &harness.Agent{Name: spec.name, Proxies: []string{d.proxies[i%len(d.proxies)].TunnelAddr()},
			Token: toks[0], Extra: spec.resources}
		if err := h.WriteAgentConfig(ha); err != nil {
			return nil, err
		}
		if err := forgetStaleIdentity(ha.DataDir, auth); err != nil {
			return nil, err
		}
		ac, err := agent.LoadConfig(ha.Config)
		if err != nil {
			return nil, err
		}
		ac.SFTPCommand = sftpCommand()
		ac.Logger = c.Logger.With("component", ac.Name)
		a, err := agent.New(ac)
		if err != nil {
			return nil, err
		}
		if err := a.Start(ctx); err != nil {
			return nil, err
		}
		d.agents = append(d.agents, a)
	}

	// A user for the person at the keyboard: their own login and root.
	d.user = "dev"
	logins := []string{"root"}
	if u, err := user.Current(); err == nil && u.Username != "root" {
		logins = append([]string{u.Username}, logins...)
	}
	paths, err := issueUser(auth, d.user, logins, []string{"admin"}, 24*time.Hour, dir, pki.KeyEd25519)
	if err != nil {
		return nil, err
	}
	d.identity = paths.key
	d.sshConfig = filepath.Join(dir, "ssh_config")
	f, err := os.OpenFile(d.sshConfig, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	var entries []sshconfig.Proxy
	for _, p := range d.proxies {
		entries = append(entries, sshconfig.Proxy{Name: p.ID(), Addr: p.UserAddr()})
	}
	werr := sshconfig.Write(f, sshconfig.Config{
		Proxies:            entries,
		User:               d.user,
		Login:              logins[0],
		Identity:           paths.key,
		KnownHosts:         paths.knownHosts,
		ResourceKnownHosts: paths.resourceKnownHosts,
		Hosts:              []string{"node1"},
		TCP:                []sshconfig.TCP{{Name: "echo"}},
	})
	if err := errors.Join(werr, f.Close()); err != nil {
		return nil, fmt.Errorf("write ssh_config: %w", err)
	}
	if err := d.waitRoutes(ctx, "node1", "echo"); err != nil {
		return nil, err
	}
	return d, nil
}

// selfCommand is how the person at the keyboard runs this binary again:
// "warren" when that is this binary on PATH, "go run ./cmd/warren" under
// `go run` (whose binary is deleted when it exits), else its path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "warren"
	}
	if p, err := exec.LookPath("warren"); err == nil {
		a, aerr := os.Stat(p)
		b, berr := os.Stat(exe)
		if aerr == nil && berr == nil && os.SameFile(a, b) {
			return "warren"
		}
	}
	if strings.Contains(filepath.ToSlash(exe), "/go-build") {
		return "go run ./cmd/warren"
	}
	return exe
}

// forgetStaleIdentity removes a dev agent's identity whose certificate no
// longer comes from the cluster's agent CA (a directory made by an older
// Warren), so that the agent joins again instead of being refused.
func forgetStaleIdentity(dataDir string, auth *pki.Authority) error {
	path := filepath.Join(dataDir, "identity.db")
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	store, err := identity.Open(path)
	if err != nil {
		return err
	}
	id, ok, err := store.Load()
	store.Close()
	if err != nil || !ok {
		return err
	}
	if pub, _, _, _, err := ssh.ParseAuthorizedKey(id.HostCert); err == nil {
		if _, err := pki.CheckAgentCert(auth.AgentCA.PublicKey(), pub, id.AgentID, time.Now()); err == nil {
			return nil
		}
	}
	return os.Remove(path)
}

// devHosts places n proxies: on loopback each gets its own address
// (127.0.0.1, 127.0.0.2, …), so all of them keep the default ports.
func devHosts(host string, n int) ([]string, error) {
	if n < 1 {
		return nil, usageError{"--proxies must be at least 1"}
	}
	if n == 1 {
		return []string{host}, nil
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || ip[0] != 127 || int(ip[3])+n-1 > 254 {
		return nil, usageError{"--proxies above 1 needs a 127.x.y.z --host: each proxy takes the next loopback address"}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).String()
	}
	return out, nil
}

// waitRoutes waits until every proxy routes every name.
func (d *devCluster) waitRoutes(ctx context.Context, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok := true
		for _, p := range d.proxies {
			snap := p.Table().Snapshot()
			for _, n := range names {
				usable := false
				for _, e := range snap.Lookup(n) {
					usable = usable || e.Usable()
				}
				ok = ok && usable
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dev cluster: resources %v not routed in time", names)
		case <-t.C:
		}
	}
}

func (d *devCluster) Close() {
	for _, a := range d.agents {
		a.Close()
	}
	for i := len(d.proxies) - 1; i >= 0; i-- {
		d.proxies[i].Close()
	}
	if d.echo != nil {
		d.echo.Close()
	}
	d.wg.Wait()
}

// serveEcho echoes every byte back until the listener closes, then closes
// the connections still open.
func serveEcho(ln net.Listener) { echo.Serve(ln, nil) }
